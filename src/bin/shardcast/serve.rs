//! `shardcast serve`: the relay server that benchmarks and conformance suites drive.

use shardcast::wire::Inbound;
use shardcast::{Audience, Context, Engine, Handler, Payload};
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

/// Options of `shardcast serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    /// Number of shards (threads). Default: the number of cores.
    #[arg(long)]
    shards: Option<usize>,
    /// Do not send a client's messages back to itself.
    #[arg(long, conflicts_with = "echo")]
    exclude_sender: bool,
    /// Send each message back to its sender only (an echo server, for conformance suites).
    #[arg(long)]
    echo: bool,
    /// Largest inbound message and frame, in bytes.
    #[arg(long, default_value_t = 64 << 10)]
    max_message_size: usize,
    /// Bytes each client's outbound queue may hold. Default: 1 MiB, or twice the largest
    /// message if that is more.
    #[arg(long)]
    client_queue_bytes: Option<usize>,
    /// Bind each shard thread to a core.
    #[arg(long)]
    pin_cores: bool,
}

/// Relays each message, opcode kept, to everyone (or back to its sender).
#[derive(Debug)]
struct Relay {
    /// Leave the sender out of the audience.
    exclude_sender: bool,
    /// Send back to the sender only.
    echo: bool,
}

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Inbound<'_>) {
        let payload = match message {
            Inbound::Text(text) => Payload::text(text),
            Inbound::Binary(bytes) => Payload::binary(bytes),
            _ => return,
        };
        let sender = ctx.id();
        if self.echo {
            ctx.send(sender, payload);
        } else if self.exclude_sender {
            ctx.broadcast(payload, Audience::ALL.except(sender));
        } else {
            ctx.broadcast(payload, Audience::ALL);
        }
    }
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let queue = args
        .client_queue_bytes
        .unwrap_or((1 << 20).max(args.max_message_size.saturating_mul(2)));
    let mut builder = Engine::builder()
        .handler(Relay {
            exclude_sender: args.exclude_sender,
            echo: args.echo,
        })
        .max_message_size(args.max_message_size)
        .client_queue_bytes_max(queue)
        .pin_cores(args.pin_cores);
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    let engine = builder.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = engine.listen(args.addr).await?;
        println!(
            "shardcast serving on ws://{addr}/ with {} shards",
            engine.shard_count()
        );
        stop_signal().await?;
        eprintln!("shardcast: shutting down");
        engine.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

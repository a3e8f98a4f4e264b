//! The flags of `shardcast bench`, and the settings it refuses before it starts anything.

use super::server::{Kind, Policy};
use super::topics::{self, Layout};
use std::path::PathBuf;

/// Options of `shardcast bench`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Args {
    /// Receiving client connections.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) clients: u64,
    /// Publisher connections (each sends `window` frames per round).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) publishers: u64,
    /// Frames each publisher sends per round (frames in flight).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) window: u64,
    /// Payload bytes per frame (at least 16: send time, publisher, sequence).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub(crate) payload: u64,
    /// Seconds of load, more than 0 and at most 86400 (ignored with --rounds).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) duration: f64,
    /// Stop after this many rounds (at least 1) instead of after --duration.
    #[arg(long)]
    pub(crate) rounds: Option<u64>,
    /// Open loop: send this many frames per second in total, whatever the clients receive (at
    /// least 1, and enough to send a frame within --duration).
    #[arg(long)]
    pub(crate) rate: Option<u64>,
    /// Which server the bench starts (ignored with --target).
    #[arg(long, value_enum, default_value_t = Kind::Embedded)]
    pub(crate) server: Kind,
    /// Serve wss: start the server with TLS, with a certificate for 127.0.0.1 and localhost
    /// made at start (the same as --server embedded-tls; the other servers speak ws only).
    #[arg(long, conflicts_with_all = ["target", "sweep"])]
    pub(crate) tls: bool,
    /// Measure an external relay server at ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH
    /// instead.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Trust the CA certificates of this PEM file for a wss:// --target (instead of the
    /// system's roots).
    #[arg(long, value_name = "PEM", requires = "target")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// Shards (threads) of the shardcast server the bench starts, 1 to 1024. Default: the number
    /// of cores. (Bun and Node `ws` run their relay on one thread.)
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub(crate) shards: Option<usize>,
    /// Bytes each client's queue may hold on the shardcast server the bench starts. Default:
    /// the server's (1 MiB).
    #[arg(long)]
    pub(crate) client_queue_bytes: Option<usize>,
    /// Slow-consumer policy of the shardcast server the bench starts.
    #[arg(long, value_enum, default_value_t = Policy::Disconnect)]
    pub(crate) slow_consumer: Policy,
    /// This fraction of the clients stops reading (with a 4 KiB receive buffer): the healthy
    /// ones must still lose nothing; the stalled ones are evicted or dropped from, per policy.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) stall: f64,
    /// Load-generator receiver threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub(crate) loadgen_threads: u64,
    /// Receiver threads poll without sleeping while frames keep coming: senders are spared a
    /// wake-up per send, at the price of a core.
    #[arg(long)]
    pub(crate) busy_poll: bool,
    /// Publish to K topics (1 to 1,000,000) with the topics protocol of `serve --topics`,
    /// instead of relaying every frame to every client.
    ///
    /// The topics are t0 to t{K-1}. Client i subscribes at upgrade (?sub=) to S topics: first
    /// i mod K (its own topic when K >= clients), then S-1 topics of its group of 10 clients
    /// (group g = i div 10 takes K-1 - ((g(S-1) + j) mod K) for j < S-1); a topic it already
    /// has moves to the next one up it does not. Publisher p's n-th publication goes to topic (nP + p) mod
    /// K, so the publishers go round-robin over the topics, and makes as many deliveries as
    /// there are measured subscribers of its topic: clients x S / K on average. K=1: everyone
    /// on one topic. K=10000 S=2 with 10000 clients: a personal topic plus a group of 10
    /// (t9000-t9999 are the groups').
    /// Payloads carry a 20-byte stamp (send time, publisher, sequence per publisher and topic,
    /// topic), so --payload must be at least 20.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) topics: Option<u64>,
    /// Topics each client subscribes to, from 1 to --topics and at most 256 (default: 1).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub(crate) subscriptions: Option<u64>,
    /// Run N shardcast nodes (`serve --nats`, 1 to 16) sharing broadcasts through a
    /// `nats-server` the bench starts on loopback, the clients and publishers spread over them
    /// in turn; latency is split into same-node and cross-node deliveries. Several counts
    /// (`--nodes 1,2`) run side by side, taking turns (see --repeat), in one table.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=16))]
    pub(crate) nodes: Vec<u64>,
    /// The `nats-server` binary for --nodes. Default: the first on PATH, else
    /// /usr/sbin/nats-server.
    #[arg(long, value_name = "PATH")]
    pub(crate) nats_server: Option<PathBuf>,
    /// Print one JSON object on standard output instead of the summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Run a matrix of clients x window x payload against each of --sweep-servers, and print
    /// one table with the ratio between servers on each row (--topics and --subscriptions apply
    /// to every row).
    #[arg(long)]
    pub(crate) sweep: bool,
    /// Client counts of the sweep (each as --clients).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) sweep_clients: Vec<u64>,
    /// Windows of the sweep (each as --window).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) sweep_windows: Vec<u64>,
    /// Payload sizes of the sweep (each as --payload).
    #[arg(long, value_delimiter = ',', default_value = "32", value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub(crate) sweep_payloads: Vec<u64>,
    /// Servers of the sweep, the first being the one the others are compared to
    /// (embedded,embedded-tls: ws against wss).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "embedded,naive"
    )]
    pub(crate) sweep_servers: Vec<Kind>,
    /// Runs of each sweep row, the servers taking turns; the table gives medians and the range
    /// of the ratios measured side by side (for machines whose speed drifts).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) repeat: u32,
}

impl Args {
    /// Refuses settings with which a run would measure nothing (or something else than asked),
    /// naming the flag. The flags clap checks by range are not repeated here.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(self.duration > 0.0 && self.duration <= 86_400.0) {
            return Err("--duration must be more than 0 and at most 86400 seconds".into());
        }
        if self.rounds == Some(0) {
            return Err("--rounds must be at least 1".into());
        }
        if let Some(rate) = self.rate {
            if rate == 0 {
                return Err("--rate must be at least 1 frame per second".into());
            }
            // The open loop sends frame k at k / rate seconds and stops at --duration: with
            // rate x duration <= 1 it sends nothing, and reports zeros.
            if self.rounds.is_none() && rate as f64 * self.duration <= 1.0 {
                return Err(format!(
                    "--rate {rate} sends no frame in --duration {}; raise either",
                    self.duration
                ));
            }
        }
        if !self.nodes.is_empty() {
            if self.target.is_some() {
                return Err("--nodes starts its own nodes: it cannot go with --target".into());
            }
            let embedded = if self.sweep {
                self.sweep_servers.contains(&Kind::Embedded)
            } else {
                self.server == Kind::Embedded
            };
            if !embedded {
                return Err(
                    "--nodes runs shardcast's own nodes: it needs the embedded server".into(),
                );
            }
        }
        if !(0.0..1.0).contains(&self.stall) {
            return Err("--stall must be a fraction from 0 up to (not including) 1".into());
        }
        if self.layout()?.is_some() {
            let (flag, payloads) = if self.sweep {
                ("--sweep-payloads", &self.sweep_payloads[..])
            } else {
                ("--payload", std::slice::from_ref(&self.payload))
            };
            if let Some(small) = payloads.iter().find(|&&p| p < topics::STAMP_BYTES as u64) {
                return Err(format!(
                    "{flag} {small} is too small with --topics: at least {} bytes (send time, \
                     publisher, sequence, topic)",
                    topics::STAMP_BYTES
                ));
            }
        }
        Ok(())
    }

    /// The topics layout `--topics` and `--subscriptions` ask for, if any; the error names the flag.
    pub(crate) fn layout(&self) -> Result<Option<Layout>, String> {
        if let (None, Some(s)) = (self.topics, self.subscriptions) {
            return Err(format!("--subscriptions {s} needs --topics"));
        }
        self.topics
            .map(|k| Layout::new(k, self.subscriptions.unwrap_or(1)))
            .transpose()
    }
}

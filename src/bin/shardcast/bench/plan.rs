//! What a bench run measures, from its flags: the setups (which servers, how many nodes) in the
//! order they take turns, the shapes (clients x window x payload) of its rows, how the servers
//! are started, and whether this process may open that many connections.

use super::args::Args;
use super::server::{Kind, ServerOptions, Setup};
use std::sync::Arc;

/// Descriptors the bench and its server use besides connections (stdio, epoll, listeners).
const DESCRIPTORS_SPARE: u64 = 64;

/// One measured configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Receiving client connections (`--clients`).
    pub(crate) clients: u64,
    /// Frames each publisher sends per round (`--window`).
    pub(crate) window: u64,
    /// Payload bytes per frame (`--payload`), or of each JSON document at most
    /// (`--payload-json`).
    pub(crate) payload: u64,
}

/// The server a single run starts: `--server`, with TLS if `--tls`.
pub(crate) fn server(args: &Args) -> Result<Kind, String> {
    match (args.tls, args.server) {
        (false, kind) => Ok(kind),
        (true, Kind::Embedded | Kind::EmbeddedTls) => Ok(Kind::EmbeddedTls),
        (true, other) => Err(format!(
            "--tls: the {} server the bench starts speaks ws only; only the embedded server \
             has TLS (measure another wss server with --target wss://HOST:PORT/ --ca FILE)",
            other.name()
        )),
    }
}

/// How the bench starts its servers; `single` is [`server`]'s answer.
///
/// # Errors
///
/// When the certificate of a wss server cannot be made.
pub(crate) fn options(args: &Args, single: Kind) -> Result<ServerOptions, String> {
    // One certificate for every wss server of the run, made only if one is.
    let tls = if args.sweep {
        args.sweep_servers.iter().any(|k| k.is_tls())
    } else {
        args.target.is_none() && single.is_tls()
    };
    Ok(ServerOptions {
        topics: args.topics.is_some(),
        deflate: args.deflate,
        shards: args.shards,
        client_queue_bytes: args.client_queue_bytes,
        slow_consumer: args.policy(),
        tls: tls
            .then(crate::tls::Generated::new)
            .transpose()?
            .map(Arc::new),
    })
}

/// Refuses a run whose connections this process's descriptor limit cannot hold.
///
/// Each connection takes a descriptor here and one in the server (which inherits the limit):
/// say so up front rather than fail with a cryptic error after connecting thousands. Call it
/// after `crate::raise_descriptor_limit`.
pub(crate) fn descriptors_suffice(args: &Args) -> Result<(), String> {
    let most_clients = if args.sweep {
        args.sweep_clients.iter().copied().max().unwrap_or(0)
    } else {
        args.clients
    };
    let needed = most_clients + args.publishers * 2 + DESCRIPTORS_SPARE;
    if let Ok((limit, hard)) = rlimit::Resource::NOFILE.get()
        && needed > limit
    {
        return Err(format!(
            "{most_clients} clients need about {needed} file descriptors in this process and in \
             the server, but the limit here is {limit} (hard limit {hard}); raise it \
             (ulimit -n) or use fewer clients"
        ));
    }
    Ok(())
}

/// What the bench starts, in the order the runs take turns: each server (`--sweep-servers`
/// with --sweep, else `single`: `--server`, with TLS if `--tls`), the embedded one once per `--nodes` count if given.
pub(crate) fn setups(args: &Args, single: Kind) -> Vec<Setup> {
    let kinds = if args.sweep {
        args.sweep_servers.clone()
    } else {
        vec![single]
    };
    let mut setups = Vec::new();
    for kind in kinds {
        if kind == Kind::Embedded && !args.nodes.is_empty() {
            setups.extend(args.nodes.iter().map(|&n| Setup {
                kind,
                nodes: Some(n as usize),
            }));
        } else {
            setups.push(Setup { kind, nodes: None });
        }
    }
    setups
}

/// The rows of a sweep, in the order they run: every `--sweep-clients` x `--sweep-windows` x
/// `--sweep-payloads`; else the one shape of `--clients`, `--window` and `--payload`.
pub(crate) fn shapes(args: &Args) -> Vec<Shape> {
    if !args.sweep {
        return vec![single_shape(args)];
    }
    let mut shapes = Vec::new();
    for &clients in &args.sweep_clients {
        for &window in &args.sweep_windows {
            for &payload in &args.sweep_payloads {
                shapes.push(Shape {
                    clients,
                    window,
                    payload,
                });
            }
        }
    }
    shapes
}

/// The shape of `--clients`, `--window` and `--payload` (or `--payload-json`).
pub(crate) fn single_shape(args: &Args) -> Shape {
    Shape {
        clients: args.clients,
        window: args.window,
        payload: args.payload_json.unwrap_or(args.payload),
    }
}

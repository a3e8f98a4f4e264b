//! `shardcast bench`: fan-out throughput and latency against the embedded server, the naive
//! baseline, the external baselines (uWebSockets through Bun, Node `ws`), or any relay server.
//!
//! The load generator must not be the bottleneck: its clients are raw TCP sockets read with
//! large buffers by `mio` poll loops and parsed without allocation (see [`loadgen`]), and it
//! reports its own CPU time next to the server's.
//!
//! With `--topics K --subscriptions S` it speaks the topics protocol of `shardcast serve
//! --topics` to every server: clients subscribe at upgrade, publishers send `pub T BODY`
//! round-robin over the topics, and the closed loop waits for each publication's subscribers;
//! the layout that says how many there are is in [`topics`].

mod args;
mod baselines;
mod broker;
mod connect;
mod loadgen;
mod measure;
mod plan;
mod publish;
mod report;
mod server;
mod sweep;
mod tcp_info;
mod topics;
mod watch;
mod wss;

pub(crate) use args::Args;
use server::Target;
use std::io::IsTerminal;

/// Runs `shardcast bench`: checks the flags, then measures the one setup they ask for, or
/// several side by side (`--sweep`, `--nodes 1,2`), and prints the report.
///
/// # Errors
///
/// When a flag is refused (the error names it), a server does not start, a connection fails,
/// or the load stalls past recovery.
pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    args.check()?;
    let single = plan::server(&args)?;
    let options = plan::options(&args, single)?;
    crate::raise_descriptor_limit();
    plan::descriptors_suffice(&args)?;
    let interactive = std::io::stdout().is_terminal() && !args.json;
    let setups = plan::setups(&args, single);
    if args.sweep || setups.len() > 1 {
        let rows = sweep::run(&args, &setups, &options, interactive)?;
        if args.json {
            println!("{}", report::sweep_json(&rows));
        } else {
            print!("{}", report::sweep_table(&rows));
        }
        return Ok(());
    }
    let target = match (&args.target, setups.first()) {
        (Some(url), _) => Target::external(url, args.ca.as_deref())?,
        (None, Some(&setup)) => Target::start(setup, &options, args.nats_server.as_deref())?,
        (None, None) => return Err("nothing to measure".into()),
    };
    let report = measure::measure(&args, plan::single_shape(&args), target, interactive)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

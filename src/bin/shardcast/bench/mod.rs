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
mod export;
mod gate;
mod loadgen;
mod measure;
mod payload;
mod plan;
mod publish;
mod report;
mod server;
mod sweep;
mod tcp_info;
mod topics;
mod value;
mod watch;
mod wss;

pub(crate) use args::Args;
use gate::Limits;
use server::Target;
use std::io::IsTerminal;

/// Runs `shardcast bench`: checks the flags, then measures the one setup they ask for, or
/// several side by side (`--sweep`, `--nodes 1,2`, `--repeat`), prints the report, and checks
/// it (see [`gate`] for the exit status).
///
/// Flags it refuses end the process at once with exit status 2, as clap does with its own
/// errors.
///
/// # Errors
///
/// When a server does not start, a connection fails, or the load stalls past recovery; and
/// after the report, when a run lost frames, had a measured connection closed by the server,
/// or went past `--max-p99`.
pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let single = match args.check().and_then(|()| plan::server(&args)) {
        Ok(single) => single,
        Err(refused) => {
            eprintln!("shardcast: {refused}");
            std::process::exit(gate::EXIT_USAGE);
        }
    };
    let options = plan::options(&args, single)?;
    crate::raise_descriptor_limit();
    plan::descriptors_suffice(&args)?;
    let interactive = std::io::stdout().is_terminal() && !args.json && !args.csv;
    let limits = Limits {
        max_p99: args.max_p99,
    };
    let setups = plan::setups(&args, single);
    if args.sweep || args.repeat > 1 || setups.len() > 1 {
        let rows = sweep::run(&args, &setups, &options, interactive)?;
        if args.json {
            println!("{}", export::sweep_json(&rows, args.repeat));
        } else if args.csv {
            print!("{}", export::sweep_csv(&rows));
        } else {
            print!("{}", report::sweep_table(&rows));
        }
        return gate::verdict(gate::sweep_failures(&rows, limits));
    }
    let target = match (&args.target, setups.first()) {
        (Some(url), _) => Target::external(url, args.ca.as_deref())?,
        (None, Some(&setup)) => Target::start(setup, &options, args.nats_server.as_deref())?,
        (None, None) => return Err("nothing to measure".into()),
    };
    let report = measure::measure(&args, plan::single_shape(&args), target, interactive)?;
    if args.json {
        println!("{}", export::run_json(&report));
    } else if args.csv {
        print!("{}", export::run_csv(&report));
    } else {
        print!("{}", report.human());
    }
    gate::verdict(gate::run_failures(&report, limits))
}

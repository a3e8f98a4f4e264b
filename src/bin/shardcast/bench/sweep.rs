//! Setups side by side (`--sweep`, or several `--nodes` counts): each row's shape measured
//! with every setup, the setups taking turns `--repeat` times, so that a drift of the
//! machine's speed hits each of them alike.

use super::args::Args;
use super::measure::measure;
use super::plan;
use super::report::{self, Report, Row};
use super::server::{ServerOptions, Setup, Target};

/// Measures every row of [`plan::shapes`] with each of `setups`, started with `options`;
/// returns the rows, each with `runs[setup][repeat]`. Says on standard error how each turn
/// went, unless `--json` or `--csv`.
///
/// # Errors
///
/// The first failure of a run: a server that does not start, a failed connection.
pub(crate) fn run(
    args: &Args,
    setups: &[Setup],
    options: &ServerOptions,
    interactive: bool,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for shape in plan::shapes(args) {
        // row[setup][repeat]: the setups take turns, so that a drift of the machine's speed
        // hits each of them alike.
        let mut row: Vec<Vec<Report>> = setups.iter().map(|_| Vec::new()).collect();
        for _ in 0..args.repeat {
            let mut turn = Vec::new();
            for &setup in setups {
                let target = Target::start(setup, options, args.nats_server.as_deref())?;
                turn.push(measure(args, shape, target, interactive)?);
            }
            if !args.json && !args.csv {
                eprintln!("{}", report::sweep_progress(&turn));
            }
            for (runs, report) in row.iter_mut().zip(turn) {
                runs.push(report);
            }
        }
        rows.push(Row { shape, runs: row });
    }
    Ok(rows)
}

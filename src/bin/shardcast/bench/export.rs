//! The figures for machines: a run's or a sweep's, as one JSON object (`--json`) or as CSV
//! lines under a header (`--csv`). docs/MEASUREMENTS.md documents both formats; keys and
//! columns are added, never renamed or removed.
//!
//! # Invariants
//!
//! - A sweep's figures for each server are its runs' reports summarised key by key
//!   ([`Value::pick`]): the `median`, `min` and `max` objects have the keys of a single run's
//!   report, and each figure in them is one that was measured.
//! - Every CSV line has the header's columns: a run's report has the same keys whatever it
//!   measured (see [`super::value`]), and the ratio columns are empty where there is none.

use super::report::{Report, Row};
use super::value::{self, Pick, Value};

/// How the summaries of repeated runs are named, in the order they are written.
const PICKS: [(&str, Pick); 3] = [
    ("median", Pick::Median),
    ("min", Pick::Min),
    ("max", Pick::Max),
];

/// The figures compared between servers, each as the first server's figure over the other's
/// (as the table's ratio column): above 1, the first server has more deliveries/s, or a
/// higher p99, or spends more CPU per delivery.
const RATIO_FIGURES: [&[&str]; 3] = [
    &["deliveries_per_sec"],
    &["latency_us", "p99"],
    &["server_cpu_ns_per_delivery"],
];

/// A run's figures as one JSON object (the keys of [`Report::figures`]).
pub(crate) fn run_json(report: &Report) -> String {
    report.figures().json()
}

/// A run's figures as CSV: the header, then one line (`row` 0, `stat` `run`, `runs` 1, no
/// ratios), in the columns of a sweep's.
pub(crate) fn run_csv(report: &Report) -> String {
    let figures = report.figures();
    let ratios = ratio_columns(None);
    let header = header(&figures, &ratios);
    let line = line(0, "run", 1, &figures, &ratios);
    value::csv(&header, &[line])
}

/// The sweep as one JSON object:
///
/// ```text
/// {"baseline": NAME, "servers": [NAME, ...], "repeat": N, "rows": [ROW, ...]}
/// ROW: {"clients", "publishers", "window", "payload_bytes", "topics": {"topics",
///       "subscriptions"} or null,
///       "servers": {NAME: {"runs": N, "median": FIGURES, "min": FIGURES, "max": FIGURES}},
///       "ratios": {NAME: {"median": RATIOS, "min": RATIOS, "max": RATIOS}}}
/// ```
///
/// FIGURES has the keys of a single run's report; RATIOS, those of [`RATIO_FIGURES`], each
/// summarising the ratios of the runs side by side (one per turn). `ratios` has every server
/// but the first.
pub(crate) fn sweep_json(rows: &[Row], repeat: u32) -> String {
    let names: Vec<String> = rows
        .first()
        .map(|row| row.runs.iter().map(|runs| name(runs)).collect())
        .unwrap_or_default();
    let rows = rows.iter().map(row_value).collect();
    Value::obj([
        (
            "baseline",
            names.first().cloned().map_or(Value::Null, Value::Str),
        ),
        (
            "servers",
            Value::Arr(names.into_iter().map(Value::Str).collect()),
        ),
        ("repeat", Value::Int(repeat.into())),
        ("rows", Value::Arr(rows)),
    ])
    .json()
}

/// The sweep as CSV: the header, then for every row (`row`, from 0) and server three lines
/// (`stat` `median`, `min`, `max`) of the figures of a single run's report, summarised over its
/// `runs`, then the ratio columns (`ratio.` and the figure; empty for the first server).
pub(crate) fn sweep_csv(rows: &[Row]) -> String {
    let mut header_line = None;
    let mut lines = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let summaries = summaries(row);
        for (server, (runs, picked)) in summaries.servers.iter().enumerate() {
            let ratios = server
                .checked_sub(1)
                .and_then(|other| summaries.ratios.get(other));
            for (p, (stat, _)) in PICKS.iter().enumerate() {
                let ratio = ratio_columns(ratios.map(|r| &r[p]));
                let header = header_line.get_or_insert_with(|| header(&picked[p], &ratio));
                debug_assert_eq!(header.len(), 3 + picked[p].columns().len() + ratio.len());
                lines.push(line(i, stat, *runs, &picked[p], &ratio));
            }
        }
    }
    header_line.map_or_else(String::new, |header| value::csv(&header, &lines))
}

/// The header of the CSV lines of `figures` with `ratios`.
fn header(figures: &Value, ratios: &[(String, String)]) -> Vec<String> {
    ["row", "stat", "runs"]
        .into_iter()
        .map(String::from)
        .chain(figures.columns().into_iter().map(|(key, _)| key))
        .chain(ratios.iter().map(|(key, _)| key.clone()))
        .collect()
}

/// One CSV line: the row, what the figures are (`stat`), over how many `runs`, the figures,
/// the ratios.
fn line(
    row: usize,
    stat: &str,
    runs: usize,
    figures: &Value,
    ratios: &[(String, String)],
) -> Vec<String> {
    [row.to_string(), stat.to_owned(), runs.to_string()]
        .into_iter()
        .chain(figures.columns().into_iter().map(|(_, field)| field))
        .chain(ratios.iter().map(|(_, field)| field.clone()))
        .collect()
}

/// The ratio columns (`ratio.deliveries_per_sec`, ...) of `ratios`, empty without.
fn ratio_columns(ratios: Option<&Value>) -> Vec<(String, String)> {
    let empty = side_by_side(&Value::Null, &Value::Null);
    ratios
        .unwrap_or(&empty)
        .columns()
        .into_iter()
        .map(|(key, field)| (format!("ratio.{key}"), field))
        .collect()
}

/// How a server is named in a sweep: its report's label.
fn name(runs: &[Report]) -> String {
    runs.first()
        .map_or_else(|| "?".into(), |r| r.server.clone())
}

/// A sweep row's summaries.
struct Summaries {
    /// Per server: its runs, and its figures summarised as [`PICKS`] says.
    servers: Vec<(usize, [Value; 3])>,
    /// Per server after the first: the ratios of its turns summarised as [`PICKS`] says.
    ratios: Vec<[Value; 3]>,
}

/// The summaries of `row`.
fn summaries(row: &Row) -> Summaries {
    let figures: Vec<Vec<Value>> = row
        .runs
        .iter()
        .map(|runs| runs.iter().map(Report::figures).collect())
        .collect();
    let pick_all = |values: &[Value]| {
        let values: Vec<&Value> = values.iter().collect();
        PICKS.map(|(_, how)| Value::pick(&values, how))
    };
    let servers = figures.iter().map(|f| (f.len(), pick_all(f))).collect();
    let ratios = match figures.split_first() {
        Some((base, others)) => others
            .iter()
            .map(|other| {
                let turns: Vec<Value> = base
                    .iter()
                    .zip(other)
                    .map(|(b, o)| side_by_side(b, o))
                    .collect();
                pick_all(&turns)
            })
            .collect(),
        None => Vec::new(),
    };
    Summaries { servers, ratios }
}

/// The [`RATIO_FIGURES`] of `base` over those of `other`, measured side by side; null where
/// either is unknown or `other`'s is 0.
fn side_by_side(base: &Value, other: &Value) -> Value {
    let ratio = |path: &[&str]| {
        let b = base.at(path).and_then(Value::as_f64);
        let o = other.at(path).and_then(Value::as_f64);
        Value::num(b.zip(o).filter(|&(_, o)| o != 0.0).map(|(b, o)| b / o))
    };
    let [rate, p99, cpu] = RATIO_FIGURES.map(ratio);
    Value::obj([
        ("deliveries_per_sec", rate),
        ("latency_us", Value::obj([("p99", p99)])),
        ("server_cpu_ns_per_delivery", cpu),
    ])
}

/// A sweep row as a JSON value (see [`sweep_json`]).
fn row_value(row: &Row) -> Value {
    let first = row.runs.first().and_then(|runs| runs.first());
    let topics = first.and_then(|r| r.topics.as_ref());
    let summaries = summaries(row);
    let picked = |p: &[Value; 3]| {
        Value::Obj(
            PICKS
                .iter()
                .map(|(k, _)| (*k).to_owned())
                .zip(p.iter().cloned())
                .collect(),
        )
    };
    let servers = row
        .runs
        .iter()
        .zip(&summaries.servers)
        .map(|(runs, (n, p))| {
            let mut entry = vec![("runs".to_owned(), Value::Int(*n as u64))];
            if let Value::Obj(fields) = picked(p) {
                entry.extend(fields);
            }
            (name(runs), Value::Obj(entry))
        })
        .collect();
    let ratios = row
        .runs
        .iter()
        .skip(1)
        .zip(&summaries.ratios)
        .map(|(runs, r)| (name(runs), picked(r)))
        .collect();
    Value::obj([
        ("clients", Value::Int(row.shape.clients)),
        ("publishers", Value::int(first.map(|r| r.publishers))),
        ("window", Value::Int(row.shape.window)),
        ("payload_bytes", Value::Int(row.shape.payload)),
        (
            "topics",
            Value::section(
                topics.is_some(),
                [
                    ("topics", Value::int(topics.map(|t| t.topics))),
                    ("subscriptions", Value::int(topics.map(|t| t.subscriptions))),
                ],
            ),
        ),
        ("servers", Value::Obj(servers)),
        ("ratios", Value::Obj(ratios)),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::plan::Shape;
    use super::super::value::keys;
    use super::*;
    use serde_json::{Value as Json, json};

    /// Row `clients`: the embedded server at 300, 100 and 200 deliveries/s, naive at 100, 100
    /// and 50 (in turns), p99 of each run its rate in µs.
    fn row(clients: u64) -> Row {
        let runs = |server: &str, rates: [u64; 3]| {
            rates
                .iter()
                .map(|&rate| Report::sample(server, rate, rate, 0))
                .collect()
        };
        Row {
            shape: Shape {
                clients,
                window: 16,
                payload: 32,
            },
            runs: vec![
                runs("embedded", [300, 100, 200]),
                runs("naive", [100, 100, 50]),
            ],
        }
    }

    fn num(v: &Json, path: &[&str]) -> f64 {
        let mut v = v;
        for key in path {
            v = v.get(key).unwrap_or_else(|| panic!("no {key} in {path:?}"));
        }
        v.as_f64()
            .unwrap_or_else(|| panic!("{path:?} is not a number"))
    }

    /// `text`, parsed.
    fn parsed(text: &str) -> Json {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn the_sweep_json_has_keyed_rows_with_each_servers_figures_and_ratios() {
        let text = sweep_json(&[row(1000), row(10_000)], 3);
        let sweep = parsed(&text);
        assert_eq!(keys(&sweep), ["baseline", "servers", "repeat", "rows"]);
        assert_eq!(sweep.get("baseline"), Some(&json!("embedded")));
        assert_eq!(sweep.get("servers"), Some(&json!(["embedded", "naive"])));
        let Some(Json::Array(rows)) = sweep.get("rows") else {
            panic!("no rows in {text}");
        };
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(
            keys(first),
            [
                "clients",
                "publishers",
                "window",
                "payload_bytes",
                "topics",
                "servers",
                "ratios"
            ]
        );
        assert_eq!(num(&rows[1], &["clients"]), 10_000.0);
        assert_eq!(first.get("topics"), Some(&Json::Null));
        let servers = first.get("servers").expect("servers");
        assert_eq!(keys(servers), ["embedded", "naive"]);
        let embedded = servers.get("embedded").expect("embedded");
        assert_eq!(keys(embedded), ["runs", "median", "min", "max"]);
        assert_eq!(num(embedded, &["runs"]), 3.0);
        // Each summary has the keys of a single run's report.
        let single = parsed(&run_json(&Report::sample("embedded", 1, 1, 0)));
        for stat in ["median", "min", "max"] {
            assert_eq!(keys(embedded.get(stat).expect(stat)), keys(&single));
        }
        assert_eq!(num(embedded, &["median", "deliveries_per_sec"]), 200.0);
        assert_eq!(num(embedded, &["min", "deliveries_per_sec"]), 100.0);
        assert_eq!(num(embedded, &["max", "latency_us", "p99"]), 300.0);
        // The ratios of the turns side by side: 3, 1 and 4.
        let ratios = first.get("ratios").expect("ratios");
        assert_eq!(keys(ratios), ["naive"]);
        let naive = ratios.get("naive").expect("naive");
        assert_eq!(num(naive, &["median", "deliveries_per_sec"]), 3.0);
        assert_eq!(num(naive, &["min", "deliveries_per_sec"]), 1.0);
        assert_eq!(num(naive, &["max", "deliveries_per_sec"]), 4.0);
        assert_eq!(num(naive, &["max", "latency_us", "p99"]), 4.0);
    }

    /// The lines of `csv` split into fields (none of the tests' fields is quoted).
    fn fields(csv: &str) -> Vec<Vec<&str>> {
        csv.lines().map(|line| line.split(',').collect()).collect()
    }

    #[test]
    fn the_sweep_csv_has_a_line_per_row_server_and_summary_under_one_header() {
        let csv = sweep_csv(&[row(1000), row(10_000)]);
        let lines = fields(&csv);
        let header = &lines[0];
        assert_eq!(header[..5], ["row", "stat", "runs", "server", "clients"]);
        assert!(header.contains(&"latency_us.p99"));
        assert_eq!(
            header[header.len() - 3..],
            [
                "ratio.deliveries_per_sec",
                "ratio.latency_us.p99",
                "ratio.server_cpu_ns_per_delivery"
            ]
        );
        // 2 rows x 2 servers x median, min, max.
        assert_eq!(lines.len(), 1 + 2 * 2 * 3);
        assert!(lines.iter().all(|l| l.len() == header.len()), "{csv}");
        let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
        let (rate, ratio) = (
            column("deliveries_per_sec"),
            column("ratio.deliveries_per_sec"),
        );
        let embedded_median = &lines[1];
        assert_eq!(embedded_median[..4], ["0", "median", "3", "embedded"]);
        assert_eq!(embedded_median[rate], "200.0");
        assert_eq!(embedded_median[ratio], "");
        let naive_max = &lines[6];
        assert_eq!(naive_max[..4], ["0", "max", "3", "naive"]);
        assert_eq!(naive_max[ratio], "4.000");
        assert_eq!(lines[7][..2], ["1", "median"]);
    }

    #[test]
    fn a_single_run_csv_is_a_header_and_one_line_in_the_sweeps_columns() {
        let report = Report::sample("embedded", 1000, 90, 2);
        let csv = run_csv(&report);
        let lines = fields(&csv);
        assert_eq!(lines.len(), 2, "{csv}");
        assert_eq!(lines[0], fields(&sweep_csv(&[row(1)]))[0]);
        assert_eq!(lines[1].len(), lines[0].len());
        assert_eq!(lines[1][..4], ["0", "run", "1", "embedded"]);
        let lost = lines[0].iter().position(|h| *h == "lost").expect("lost");
        assert_eq!(lines[1][lost], "2");
    }
}

//! What a run measured, as a readable summary, as figures for machines (see [`super::export`]),
//! or as a row of the sweep table.

use super::payload::Format;
use super::plan::Shape;
use super::value::Value;
use hdrhistogram::Histogram;
use std::fmt::Write;

/// One row of a sweep: a shape measured with every setup, the setups taking turns.
#[derive(Debug)]
pub(crate) struct Row {
    /// What the row asked for (`--sweep-clients`, `--sweep-windows`, `--sweep-payloads`).
    pub(crate) shape: Shape,
    /// `runs[setup][repeat]`: every setup's reports, in the order the repeats ran.
    pub(crate) runs: Vec<Vec<Report>>,
}

/// The figures of one run.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) server: String,
    pub(crate) clients: u64,
    pub(crate) publishers: u64,
    pub(crate) window: u64,
    pub(crate) payload_bytes: u64,
    /// The payloads' format: binary frames, or JSON documents in text frames
    /// (`--payload-json`, of `payload_bytes` at most).
    pub(crate) payload_format: Format,
    pub(crate) duration_s: f64,
    pub(crate) deliveries: u64,
    pub(crate) publishes: u64,
    pub(crate) lost: u64,
    pub(crate) closed: u64,
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) server_cpu_ns: Option<u64>,
    pub(crate) loadgen_cpu_ns: Option<u64>,
    /// Busy time of the whole machine during the load (every process, interrupts and softirqs
    /// included: loopback TCP's receiving half may run there, charged to nobody's process).
    pub(crate) machine_cpu_ns: Option<u64>,
    pub(crate) loadgen_cpu_share: Option<f64>,
    /// TCP segments the machine sent during the load (`OutSegs` of `/proc/net/snmp`): with
    /// the server on loopback, both ends' (the load generator's own and every ack included,
    /// and with `--nodes` the NATS traffic too). A figure to compare runs of the same client
    /// on the same machine, not an absolute cost. `None` off Linux, or for a target elsewhere,
    /// whose end the machine does not see.
    pub(crate) tcp_segments: Option<u64>,
    /// Data segments the server sent to the measured clients during the load: the growth of
    /// `tcpi_data_segs_in` summed over their sockets (see [`super::tcp_info`]). Exact, and
    /// unaffected by other traffic; `None` off Linux or where the kernel cannot say.
    pub(crate) server_data_segments: Option<u64>,
    /// Bytes the measured clients read off their sockets, frames' headers included (and the
    /// pongs to their pings; with `wss`, the TLS records): what the deliveries cost on the
    /// wire, compressed or not as they came.
    pub(crate) wire_bytes: Option<u64>,
    /// permessage-deflate, with `--deflate`.
    pub(crate) deflate: Option<Deflate>,
    pub(crate) rss_before: Option<u64>,
    pub(crate) rss_idle: Option<u64>,
    pub(crate) rss_loaded: Option<u64>,
    pub(crate) write_syscalls_per_delivery: Option<f64>,
    /// With the io_uring driver: submissions (one system call each, for many sends) per
    /// delivery; `write_syscalls_per_delivery` then counts the sends.
    pub(crate) io_uring_submissions_per_delivery: Option<f64>,
    /// The server's resident memory during the run: (seconds since the first publish, bytes).
    pub(crate) rss_samples: Vec<(f64, u64)>,
    /// The topics, with `--topics`.
    pub(crate) topics: Option<Topics>,
    /// What happened to the stalled clients, with `--stall`.
    pub(crate) stall: Option<Stall>,
    /// The nodes and their broker, with `--nodes`.
    pub(crate) cluster: Option<Cluster>,
}

/// The nodes of a `--nodes` run.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Nodes the connections were spread over.
    pub(crate) nodes: usize,
    /// Latency of deliveries by the publisher's own node.
    pub(crate) same_node_us: Histogram<u64>,
    /// Latency of deliveries that crossed the broker to another node.
    pub(crate) cross_node_us: Histogram<u64>,
    /// Messages the nodes published to the broker per publication (at most 1: once per
    /// broadcast whatever the shards and clients, less where consecutive broadcasts travel
    /// in one message).
    pub(crate) broker_messages_per_publish: Option<f64>,
}

impl Cluster {
    /// "p50 X  p99 Y" of `h`, or "none".
    fn summary(h: &Histogram<u64>) -> String {
        if h.is_empty() {
            return "none".into();
        }
        format!(
            "p50 {}  p99 {}  ({} deliveries)",
            micros(h.value_at_quantile(0.5)),
            micros(h.value_at_quantile(0.99)),
            thousands(h.len() as f64)
        )
    }
}

/// The `q` quantile of `h` in µs, 0 if it is empty.
fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// permessage-deflate in a `--deflate` run.
#[derive(Debug)]
pub(crate) struct Deflate {
    /// Measured clients whose server accepted the offer (the others get plain frames).
    pub(crate) negotiated: u64,
    /// Deliveries that came compressed (RSV1), inflated by the clients.
    pub(crate) compressed_deliveries: u64,
}

/// The topics of a `--topics` run.
#[derive(Debug)]
pub(crate) struct Topics {
    /// K.
    pub(crate) topics: u64,
    /// S, per client.
    pub(crate) subscriptions: u64,
    /// Deliveries the publications should have made: the sum of their topics' measured
    /// subscribers.
    pub(crate) expected_deliveries: u64,
}

/// The stalled clients of a `--stall` run.
#[derive(Debug)]
pub(crate) struct Stall {
    /// Clients that never read.
    pub(crate) stalled: u64,
    /// Clients the server evicted during the run.
    pub(crate) evicted: Option<u64>,
    /// Frames the server dropped during the run.
    pub(crate) frames_dropped: Option<u64>,
    /// Seconds from the first publish until every stalled client was evicted (or, under a drop
    /// policy, until the first drop).
    pub(crate) resolved_after_s: Option<f64>,
    /// The server's per-client queue cap; `None` for a server without one we know (the
    /// baselines).
    pub(crate) queue_bytes_max: Option<u64>,
}

impl Report {
    pub(crate) fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.duration_s.max(1e-9)
    }

    fn publishes_per_sec(&self) -> f64 {
        self.publishes as f64 / self.duration_s.max(1e-9)
    }

    /// A count over the load (ns, segments) per delivery.
    fn per_delivery(&self, count: Option<u64>) -> Option<f64> {
        per(count, self.deliveries)
    }

    /// Server CPU time per publication, in ns: what a publish costs the server with its
    /// fan-out (with topics, the subscribers of its topic; else every client).
    fn server_cpu_per_publication(&self) -> Option<f64> {
        self.server_cpu_ns
            .filter(|_| self.publishes > 0)
            .map(|ns| ns as f64 / self.publishes as f64)
    }

    /// TCP segments the machine sent per delivery (see [`Report::tcp_segments`]).
    fn tcp_segments_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.tcp_segments)
    }

    /// Data segments the server sent to its subscribers per delivery (see
    /// [`Report::server_data_segments`]).
    fn server_data_segments_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.server_data_segments)
    }

    /// Bytes the measured clients read off their sockets per delivery (see
    /// [`Report::wire_bytes`]).
    fn wire_bytes_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.wire_bytes)
    }

    /// The "deflate" line of the summary, with `--deflate`.
    fn deflate_summary(&self) -> Option<String> {
        let d = self.deflate.as_ref()?;
        if d.negotiated == 0 && d.compressed_deliveries == 0 {
            return Some("offered; the server declined it: every frame plain".into());
        }
        Some(format!(
            "negotiated by {} of {} clients; {} of {} deliveries compressed ({:.1}%)",
            d.negotiated,
            self.clients,
            d.compressed_deliveries,
            self.deliveries,
            d.compressed_deliveries as f64 / self.deliveries.max(1) as f64 * 100.0
        ))
    }

    /// The "TCP segments" line of the summary: the server's, then the machine's.
    fn segments_summary(&self) -> String {
        let server = self.server_data_segments_per_delivery().map(|d| {
            format!("{d:.4} per delivery from the server to its subscribers (tcpi_data_segs_in)")
        });
        let machine = self.tcp_segments_per_delivery().map(|t| {
            format!("{t:.4} per delivery sent by the whole machine (both ends, acks included)")
        });
        match (server, machine) {
            (Some(s), Some(m)) => format!("{s}; {m}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "n/a".into(),
        }
    }

    fn rss_per_conn(&self) -> Option<f64> {
        self.per_conn(self.rss_idle?)
    }

    /// Resident memory per connection under load (at the end of the run).
    fn rss_per_conn_loaded(&self) -> Option<f64> {
        self.per_conn(self.rss_loaded?)
    }

    /// Memory above the server's footprint before any client connected, per connection.
    fn per_conn(&self, rss: u64) -> Option<f64> {
        let conns = self.clients + self.publishers + self.stall.as_ref().map_or(0, |s| s.stalled);
        Some(rss.saturating_sub(self.rss_before?) as f64 / conns as f64)
    }

    /// Resident memory the server may use with stalled clients: idle memory plus a full queue
    /// per stalled client.
    fn stall_bound(&self) -> Option<u64> {
        let st = self.stall.as_ref()?;
        Some(self.rss_idle? + st.queue_bytes_max? * st.stalled)
    }

    /// Growth of the server's memory from the first minute to the end of the run, in percent
    /// (runs of more than two minutes only).
    fn rss_growth_after_first_minute(&self) -> Option<(u64, u64, f64)> {
        let after_minute = self.rss_samples.iter().find(|(t, _)| *t >= 60.0)?.1;
        let last = self.rss_samples.last()?;
        (last.0 >= 120.0).then(|| {
            let growth = (last.1 as f64 - after_minute as f64) / after_minute as f64 * 100.0;
            (after_minute, last.1, growth)
        })
    }

    /// The `q` quantile of the latency, in µs (0 without deliveries).
    pub(crate) fn percentile(&self, q: f64) -> u64 {
        quantile(&self.latency_us, q)
    }

    /// The summary for a person.
    pub(crate) fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "shardcast bench: {} server, {} clients, {} publisher(s), window {}, {} B {}payload, {:.1} s",
            self.server,
            self.clients,
            self.publishers,
            self.window,
            self.payload_bytes,
            match self.payload_format {
                Format::Binary => "",
                Format::Json => "JSON ",
            },
            self.duration_s
        );
        let _ = writeln!(
            s,
            "  deliveries/s   {:>12}   (publishes/s {})",
            thousands(self.deliveries_per_sec()),
            thousands(self.publishes_per_sec())
        );
        let _ = writeln!(
            s,
            "  wire bytes     {} per delivery read by the clients (frames' headers included)",
            opt(self.wire_bytes_per_delivery(), 1)
        );
        if let Some(line) = self.deflate_summary() {
            let _ = writeln!(s, "  deflate        {line}");
        }
        if let Some(t) = &self.topics {
            let _ = writeln!(
                s,
                "  topics         {} topics, {} per client: {:.2} deliveries per publication \
                 ({} expected, {} received)",
                t.topics,
                t.subscriptions,
                t.expected_deliveries as f64 / self.publishes.max(1) as f64,
                t.expected_deliveries,
                self.deliveries
            );
        }
        let _ = writeln!(
            s,
            "  latency        p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            micros(self.percentile(0.5)),
            micros(self.percentile(0.9)),
            micros(self.percentile(0.99)),
            micros(self.percentile(0.999)),
            micros(self.latency_us.max()),
        );
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                s,
                "  nodes          {} sharing through NATS: same node {}; other node {}",
                c.nodes,
                Cluster::summary(&c.same_node_us),
                Cluster::summary(&c.cross_node_us),
            );
            let _ = writeln!(
                s,
                "  NATS           {} messages published per publication (server CPU below \
                 includes nats-server's)",
                opt(c.broker_messages_per_publish, 3),
            );
        }
        let _ = writeln!(
            s,
            "  lost           {}{}",
            self.lost,
            if self.closed > 0 {
                format!("   ({} connections closed by the server)", self.closed)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "  CPU            server {} ns/delivery ({} ns/publication)   load generator {} ns/delivery ({} of the machine)   machine {} ns/delivery",
            opt(self.per_delivery(self.server_cpu_ns), 0),
            opt(self.server_cpu_per_publication(), 0),
            opt(self.per_delivery(self.loadgen_cpu_ns), 0),
            self.loadgen_cpu_share
                .map_or("n/a".into(), |f| format!("{:.0}%", f * 100.0)),
            opt(self.per_delivery(self.machine_cpu_ns), 0),
        );
        let _ = writeln!(
            s,
            "  server memory  {} B/connection idle, {} B/connection under load ({} MiB)",
            opt(self.rss_per_conn(), 0),
            opt(self.rss_per_conn_loaded(), 0),
            opt(self.rss_loaded.map(|b| b as f64 / (1 << 20) as f64), 1),
        );
        let _ = writeln!(
            s,
            "  write calls    {}{}",
            self.write_syscalls_per_delivery
                .map_or("n/a".into(), |w| format!("{w:.4} per delivery")),
            self.io_uring_submissions_per_delivery
                .map_or(String::new(), |u| format!(
                    " (sends), in {u:.4} io_uring submissions per delivery"
                )),
        );
        let _ = writeln!(s, "  TCP segments   {}", self.segments_summary());
        if let Some((minute, last, growth)) = self.rss_growth_after_first_minute() {
            let _ = writeln!(
                s,
                "  soak           server memory {:.1} MiB after the first minute, {:.1} MiB at the end ({growth:+.2}%)",
                minute as f64 / (1 << 20) as f64,
                last as f64 / (1 << 20) as f64,
            );
        }
        if let Some(st) = &self.stall {
            let _ = writeln!(
                s,
                "  stalled        {} clients: {} evicted, {} frames dropped, after {} s; memory bound {} MiB (idle + cap x stalled), used {} MiB",
                st.stalled,
                st.evicted.map_or("n/a".into(), |v| v.to_string()),
                st.frames_dropped.map_or("n/a".into(), |v| v.to_string()),
                opt(st.resolved_after_s, 2),
                opt(self.stall_bound().map(|b| b as f64 / (1 << 20) as f64), 1),
                opt(self.rss_loaded.map(|b| b as f64 / (1 << 20) as f64), 1),
            );
        }
        s
    }

    /// The figures, as `--json` writes them (one object) and `--csv` (one line). Their keys
    /// are documented in docs/MEASUREMENTS.md: add, never rename.
    pub(crate) fn figures(&self) -> Value {
        // A node latency of the cluster section: null without one.
        let latency = |h: Option<&Histogram<u64>>| {
            Value::obj([
                ("p50", Value::int(h.map(|h| quantile(h, 0.5)))),
                ("p99", Value::int(h.map(|h| quantile(h, 0.99)))),
                ("count", Value::int(h.map(Histogram::len))),
            ])
        };
        let (topics, stall, cluster, deflate) =
            (&self.topics, &self.stall, &self.cluster, &self.deflate);
        Value::obj([
            ("server", Value::Str(self.server.clone())),
            ("clients", Value::Int(self.clients)),
            ("publishers", Value::Int(self.publishers)),
            ("window", Value::Int(self.window)),
            ("payload_bytes", Value::Int(self.payload_bytes)),
            ("payload", Value::Str(self.payload_format.name().into())),
            ("duration_s", Value::Num(self.duration_s, 3)),
            ("deliveries", Value::Int(self.deliveries)),
            (
                "deliveries_per_sec",
                Value::Num(self.deliveries_per_sec(), 1),
            ),
            ("publishes", Value::Int(self.publishes)),
            ("publishes_per_sec", Value::Num(self.publishes_per_sec(), 1)),
            ("lost", Value::Int(self.lost)),
            ("closed", Value::Int(self.closed)),
            (
                "latency_us",
                Value::obj([
                    ("p50", Value::Int(self.percentile(0.5))),
                    ("p90", Value::Int(self.percentile(0.9))),
                    ("p99", Value::Int(self.percentile(0.99))),
                    ("p999", Value::Int(self.percentile(0.999))),
                    ("max", Value::Int(self.latency_us.max())),
                ]),
            ),
            (
                "server_cpu_ns_per_delivery",
                Value::num(self.per_delivery(self.server_cpu_ns)),
            ),
            (
                "server_cpu_ns_per_publication",
                Value::num(self.server_cpu_per_publication()),
            ),
            (
                "loadgen_cpu_ns_per_delivery",
                Value::num(self.per_delivery(self.loadgen_cpu_ns)),
            ),
            (
                "machine_cpu_ns_per_delivery",
                Value::num(self.per_delivery(self.machine_cpu_ns)),
            ),
            ("loadgen_cpu_share", Value::num(self.loadgen_cpu_share)),
            ("server_rss_bytes_per_conn", Value::num(self.rss_per_conn())),
            (
                "server_rss_bytes_per_conn_loaded",
                Value::num(self.rss_per_conn_loaded()),
            ),
            ("server_rss_bytes_loaded", Value::int(self.rss_loaded)),
            (
                "write_syscalls_per_delivery",
                Value::num(self.write_syscalls_per_delivery),
            ),
            (
                "io_uring_submissions_per_delivery",
                Value::num(self.io_uring_submissions_per_delivery),
            ),
            (
                "tcp_segments_per_delivery",
                Value::num(self.tcp_segments_per_delivery()),
            ),
            (
                "server_data_segments_per_delivery",
                Value::num(self.server_data_segments_per_delivery()),
            ),
            (
                "wire_bytes_per_delivery",
                Value::num(self.wire_bytes_per_delivery()),
            ),
            (
                "rss_growth_after_first_minute_pct",
                Value::num(self.rss_growth_after_first_minute().map(|(_, _, g)| g)),
            ),
            (
                "topics",
                Value::section(
                    topics.is_some(),
                    [
                        ("topics", Value::int(topics.as_ref().map(|t| t.topics))),
                        (
                            "subscriptions",
                            Value::int(topics.as_ref().map(|t| t.subscriptions)),
                        ),
                        (
                            "expected_deliveries",
                            Value::int(topics.as_ref().map(|t| t.expected_deliveries)),
                        ),
                    ],
                ),
            ),
            (
                "stall",
                Value::section(
                    stall.is_some(),
                    [
                        ("stalled", Value::int(stall.as_ref().map(|st| st.stalled))),
                        (
                            "evicted",
                            Value::int(stall.as_ref().and_then(|st| st.evicted)),
                        ),
                        (
                            "frames_dropped",
                            Value::int(stall.as_ref().and_then(|st| st.frames_dropped)),
                        ),
                        (
                            "resolved_after_s",
                            Value::num(stall.as_ref().and_then(|st| st.resolved_after_s)),
                        ),
                        ("rss_bound_bytes", Value::int(self.stall_bound())),
                    ],
                ),
            ),
            (
                "cluster",
                Value::section(
                    cluster.is_some(),
                    [
                        (
                            "nodes",
                            Value::int(cluster.as_ref().map(|c| c.nodes as u64)),
                        ),
                        (
                            "same_node_latency_us",
                            latency(cluster.as_ref().map(|c| &c.same_node_us)),
                        ),
                        (
                            "cross_node_latency_us",
                            latency(cluster.as_ref().map(|c| &c.cross_node_us)),
                        ),
                        (
                            "broker_messages_per_publish",
                            Value::num(
                                cluster.as_ref().and_then(|c| c.broker_messages_per_publish),
                            ),
                        ),
                    ],
                ),
            ),
            (
                "deflate",
                Value::section(
                    deflate.is_some(),
                    [
                        (
                            "negotiated",
                            Value::int(deflate.as_ref().map(|d| d.negotiated)),
                        ),
                        (
                            "compressed_deliveries",
                            Value::int(deflate.as_ref().map(|d| d.compressed_deliveries)),
                        ),
                    ],
                ),
            ),
        ])
    }
}

/// One line of progress after a sweep row.
pub(crate) fn sweep_progress(row: &[Report]) -> String {
    let Some(first) = row.first() else {
        return String::new();
    };
    let mut s = format!(
        "sweep: {} clients, window {}, {} B:",
        first.clients, first.window, first.payload_bytes
    );
    for r in row {
        let _ = write!(
            s,
            " {} {}/s (lost {})",
            r.server,
            thousands(r.deliveries_per_sec()),
            r.lost
        );
    }
    s
}

/// Columns of each server in the sweep table.
const SERVER_COLUMNS: usize = 8;

/// The sweep as a Markdown table: each server's deliveries/s (median of the repeats, with
/// their range), p99, CPU per delivery, server CPU per publication, TCP segments per delivery
/// (the server's data segments to its subscribers / the machine's), wire bytes per delivery
/// and memory per connection (of the median run) and lost (over all runs), and the first
/// server's ratio to each other one (of the medians, with the range of the ratios of runs side
/// by side).
pub(crate) fn sweep_table(rows: &[Row]) -> String {
    let Some(first) = rows.first().map(|row| &row.runs) else {
        return String::new();
    };
    let name = |runs: &Vec<Report>| runs.first().map_or("?", |r| r.server.as_str()).to_owned();
    let base_name = first.first().map(name).unwrap_or_default();
    let repeats = first.first().map_or(0, Vec::len);
    let mut s = String::from("| clients | window | payload |");
    for runs in first {
        let _ = write!(
            s,
            " {0} deliveries/s | {0} p99 | {0} lost | {0} CPU ns/delivery, server / machine | {0} server CPU ns/publication | {0} TCP segments/delivery, server data / machine | {0} wire B/delivery | {0} B/connection, idle / loaded |",
            name(runs)
        );
    }
    for runs in first.iter().skip(1) {
        let _ = write!(s, " {} / {} |", base_name, name(runs));
    }
    s.push('\n');
    let columns = 3 + first.len() * SERVER_COLUMNS + first.len().saturating_sub(1);
    s.push_str(&"|---".repeat(columns));
    s.push_str("|\n");
    for Row { runs: row, .. } in rows {
        let Some(base) = row.first().and_then(|runs| runs.first()) else {
            continue;
        };
        let _ = write!(
            s,
            "| {} | {} | {} B |",
            base.clients, base.window, base.payload_bytes
        );
        for runs in row {
            let Some(median) = median_run(runs) else {
                s.push_str(&" - |".repeat(SERVER_COLUMNS));
                continue;
            };
            let rates: Vec<f64> = runs.iter().map(Report::deliveries_per_sec).collect();
            // Across nodes: the same-node and the cross-node p99.
            let p99 = match &median.cluster {
                Some(c) if !c.cross_node_us.is_empty() => format!(
                    "{} / {}",
                    micros(quantile(&c.same_node_us, 0.99)),
                    micros(quantile(&c.cross_node_us, 0.99))
                ),
                _ => micros(median.percentile(0.99)),
            };
            let _ = write!(
                s,
                " {}{} | {} | {} | {} / {} | {} | {} / {} | {} | {} / {} |",
                thousands(median.deliveries_per_sec()),
                spread(&rates, thousands),
                p99,
                runs.iter().map(|r| r.lost).sum::<u64>(),
                opt(median.per_delivery(median.server_cpu_ns), 0),
                opt(median.per_delivery(median.machine_cpu_ns), 0),
                opt(median.server_cpu_per_publication(), 0),
                opt(median.server_data_segments_per_delivery(), 3),
                opt(median.tcp_segments_per_delivery(), 3),
                opt(median.wire_bytes_per_delivery(), 1),
                opt(median.rss_per_conn(), 0),
                opt(median.rss_per_conn_loaded(), 0),
            );
        }
        let base_runs = &row[0];
        for runs in row.iter().skip(1) {
            let (Some(b), Some(o)) = (median_run(base_runs), median_run(runs)) else {
                s.push_str(" - |");
                continue;
            };
            let ratios: Vec<f64> = base_runs
                .iter()
                .zip(runs)
                .map(|(b, o)| b.deliveries_per_sec() / o.deliveries_per_sec().max(1e-9))
                .collect();
            let _ = write!(
                s,
                " {:.2}x{} |",
                b.deliveries_per_sec() / o.deliveries_per_sec().max(1e-9),
                spread(&ratios, |v| format!("{v:.2}x"))
            );
        }
        s.push('\n');
    }
    if let Some(t) = first.first().and_then(|runs| runs.first()?.topics.as_ref()) {
        let _ = writeln!(
            s,
            "\nEvery row: {} topics, {} per client (deliveries per publication vary with the \
             clients: clients x {} / {} on average).",
            t.topics, t.subscriptions, t.subscriptions, t.topics
        );
    }
    let clustered = rows
        .iter()
        .flat_map(|row| row.runs.iter().flatten())
        .any(|r| {
            r.cluster
                .as_ref()
                .is_some_and(|c| !c.cross_node_us.is_empty())
        });
    if clustered {
        let _ = writeln!(
            s,
            "\nWith nodes, p99 is same-node / cross-node: deliveries by the publisher's own node, \
             and those that crossed NATS to another."
        );
    }
    if repeats > 1 {
        let _ = writeln!(
            s,
            "\nMedians of {repeats} runs per server, the servers taking turns; in parentheses \
             the range over the runs (for ratios: of each turn's runs side by side)."
        );
    }
    s
}

/// The run with the median deliveries/s.
fn median_run(runs: &[Report]) -> Option<&Report> {
    let rates: Vec<f64> = runs.iter().map(Report::deliveries_per_sec).collect();
    median_index(&rates).and_then(|i| runs.get(i))
}

/// Index of the median of `values` (the lower middle one of an even count).
fn median_index(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order.get(values.len().saturating_sub(1) / 2).copied()
}

/// " (min-max)" of `values` when there are several, else nothing.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(" ({}-{})", show(min), show(max))
}

/// `count` per delivery; `None` if it is unknown or nothing was delivered.
fn per(count: Option<u64>, deliveries: u64) -> Option<f64> {
    count
        .filter(|_| deliveries > 0)
        .map(|c| c as f64 / deliveries as f64)
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

/// Reports made up for the tests of what is printed from them.
#[cfg(test)]
impl Report {
    /// A run of `server` with 100 clients over 1 s: `deliveries` of them, each of latency
    /// `latency_us`, and `lost` frames lost; the server's figures known (CPU, memory, segments).
    pub(crate) fn sample(server: &str, deliveries: u64, latency_us: u64, lost: u64) -> Report {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
        latency
            .record_n(latency_us, deliveries.max(1))
            .expect("in bounds");
        Report {
            server: server.into(),
            clients: 100,
            publishers: 1,
            window: 16,
            payload_bytes: 32,
            payload_format: Format::Binary,
            duration_s: 1.0,
            deliveries,
            publishes: deliveries / 100,
            lost,
            closed: 0,
            latency_us: latency,
            server_cpu_ns: Some(deliveries * 1000),
            loadgen_cpu_ns: Some(deliveries * 500),
            machine_cpu_ns: Some(deliveries * 2000),
            loadgen_cpu_share: Some(0.25),
            tcp_segments: Some(deliveries / 2),
            server_data_segments: Some(deliveries / 4),
            wire_bytes: Some(deliveries * 38),
            deflate: None,
            rss_before: Some(10 << 20),
            rss_idle: Some(11 << 20),
            rss_loaded: Some(12 << 20),
            write_syscalls_per_delivery: Some(0.25),
            io_uring_submissions_per_delivery: None,
            rss_samples: Vec::new(),
            topics: None,
            stall: None,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_lower_middle_one() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[5.0]), Some(0));
        assert_eq!(median_index(&[9.0, 1.0, 5.0]), Some(2));
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), Some(3));
    }

    #[test]
    fn a_figure_per_delivery_needs_the_count_and_a_delivery() {
        assert_eq!(per(Some(500), 1000), Some(0.5));
        assert_eq!(per(Some(500), 0), None);
        assert_eq!(per(None, 1000), None);
    }

    #[test]
    fn a_spread_is_shown_only_for_several_values() {
        assert_eq!(spread(&[2.0], |v| format!("{v}")), "");
        assert_eq!(spread(&[3.0, 1.0, 2.0], |v| format!("{v}")), " (1-3)");
    }

    #[test]
    fn the_json_report_keeps_its_keys_and_their_order() {
        let json = Report::sample("embedded", 100_000, 800, 0).figures().json();
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(
            super::super::value::keys(&parsed),
            [
                "server",
                "clients",
                "publishers",
                "window",
                "payload_bytes",
                "payload",
                "duration_s",
                "deliveries",
                "deliveries_per_sec",
                "publishes",
                "publishes_per_sec",
                "lost",
                "closed",
                "latency_us",
                "server_cpu_ns_per_delivery",
                "server_cpu_ns_per_publication",
                "loadgen_cpu_ns_per_delivery",
                "machine_cpu_ns_per_delivery",
                "loadgen_cpu_share",
                "server_rss_bytes_per_conn",
                "server_rss_bytes_per_conn_loaded",
                "server_rss_bytes_loaded",
                "write_syscalls_per_delivery",
                "io_uring_submissions_per_delivery",
                "tcp_segments_per_delivery",
                "server_data_segments_per_delivery",
                "wire_bytes_per_delivery",
                "rss_growth_after_first_minute_pct",
                "topics",
                "stall",
                "cluster",
                "deflate",
            ]
        );
        assert!(json.starts_with(
            r#"{"server":"embedded","clients":100,"publishers":1,"window":16,"payload_bytes":32,"payload":"binary","duration_s":1.000,"deliveries":100000,"deliveries_per_sec":100000.0,"#
        ));
        assert!(json.contains(r#""lost":0,"closed":0,"latency_us":{"p50":800,"#));
        assert!(json.contains(
            r#""write_syscalls_per_delivery":0.250,"io_uring_submissions_per_delivery":null,"#
        ));
        assert!(json.contains(r#""wire_bytes_per_delivery":38.000,"#));
        assert!(json.ends_with(r#""topics":null,"stall":null,"cluster":null,"deflate":null}"#));
    }

    #[test]
    fn the_sections_of_a_run_are_objects_when_it_has_them() {
        let mut report = Report::sample("embedded x2 nats", 1000, 50, 0);
        report.topics = Some(Topics {
            topics: 10,
            subscriptions: 2,
            expected_deliveries: 1000,
        });
        report.stall = Some(Stall {
            stalled: 3,
            evicted: Some(3),
            frames_dropped: None,
            resolved_after_s: Some(0.5),
            queue_bytes_max: Some(1 << 20),
        });
        let histogram = || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
        report.cluster = Some(Cluster {
            nodes: 2,
            same_node_us: histogram(),
            cross_node_us: histogram(),
            broker_messages_per_publish: Some(1.0),
        });
        let json = report.figures().json();
        assert!(
            json.contains(r#""topics":{"topics":10,"subscriptions":2,"expected_deliveries":1000}"#)
        );
        assert!(json.contains(
            r#""stall":{"stalled":3,"evicted":3,"frames_dropped":null,"resolved_after_s":0.500,"rss_bound_bytes":14680064}"#
        ));
        assert!(json.contains(
            r#""cluster":{"nodes":2,"same_node_latency_us":{"p50":0,"p99":0,"count":0},"#
        ));
    }

    #[test]
    fn a_deflate_run_says_how_many_clients_negotiated_and_what_came_compressed() {
        let mut report = Report::sample("bun", 1000, 50, 0);
        report.payload_format = Format::Json;
        report.payload_bytes = 1024;
        report.deflate = Some(Deflate {
            negotiated: 100,
            compressed_deliveries: 1000,
        });
        let json = report.figures().json();
        assert!(json.contains(r#""payload_bytes":1024,"payload":"json","#));
        assert!(json.ends_with(r#""deflate":{"negotiated":100,"compressed_deliveries":1000}}"#));
        let human = report.human();
        assert!(human.contains("1024 B JSON payload"), "{human}");
        assert!(
            human.contains("deflate        negotiated by 100 of 100 clients; 1000 of 1000 deliveries compressed (100.0%)"),
            "{human}"
        );
        assert!(
            human.contains("wire bytes     38.0 per delivery"),
            "{human}"
        );
        report.deflate = Some(Deflate {
            negotiated: 0,
            compressed_deliveries: 0,
        });
        assert!(
            report
                .human()
                .contains("offered; the server declined it: every frame plain"),
            "{}",
            report.human()
        );
    }
}

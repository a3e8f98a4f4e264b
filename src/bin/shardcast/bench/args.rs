//! The flags of `shardcast bench`, and the settings it refuses before it starts anything.
//!
//! A flag that would be ignored is refused rather than dropped silently: `--sweep-*` without
//! `--sweep`; the single run's shape and server (`--clients`, `--window`, `--payload`,
//! `--server`) with `--sweep`; `--duration` with `--rounds`; what only a server the bench
//! starts takes (`--server`, `--shards`, `--client-queue-bytes`, `--slow-consumer`,
//! `--repeat`, `--sweep`) with `--target`; `--shards`, `--client-queue-bytes` and
//! `--slow-consumer` when no server of the run takes them; `--nats-server` without `--nodes`;
//! `--tls` with `--nodes`; a server or a node count named twice; `--json` with `--csv`;
//! `--payload-json` with `--payload` or `--sweep`.

use super::payload::{self, Format};
use super::server::{Kind, Policy};
use super::topics::{self, Layout};
use crate::units::duration as latency;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `shardcast bench`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Args {
    /// Receiving client connections (with --sweep: --sweep-clients).
    #[arg(long, default_value_t = 1000, conflicts_with = "sweep", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) clients: u64,
    /// Publisher connections (each sends `window` frames per round).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) publishers: u64,
    /// Frames each publisher sends per round (frames in flight; with --sweep: --sweep-windows).
    #[arg(long, default_value_t = 16, conflicts_with = "sweep", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) window: u64,
    /// Payload bytes per frame (at least 16: send time, publisher, sequence; with --sweep:
    /// --sweep-payloads).
    #[arg(long, default_value_t = 32, conflicts_with = "sweep", value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub(crate) payload: u64,
    /// Send JSON instead, in text frames: a realistic document of about BYTES bytes (at most
    /// BYTES, at least 256), an order-book update whose keys repeat as real JSON's do and
    /// whose numbers vary per message (a PRNG seeded by the message), its first member the
    /// stamp the clients check (not with --payload or --sweep).
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["payload", "sweep"], value_parser = clap::value_parser!(u64).range(payload::JSON_MIN_BYTES..=16_777_216))]
    pub(crate) payload_json: Option<u64>,
    /// Offer permessage-deflate (RFC 7692) on every connection as Chrome does
    /// (`permessage-deflate; client_max_window_bits`), and inflate the compressed frames
    /// received before checking them. The report says how many clients the server accepted it
    /// for and how many deliveries came compressed; a server that declines sends plain frames,
    /// which is fine. With --server bun, Bun runs with perMessageDeflate and publishes
    /// compressed. Publishers send plain frames.
    #[arg(long)]
    pub(crate) deflate: bool,
    /// Seconds of load, more than 0 and at most 86400 (not with --rounds).
    #[arg(long, default_value_t = 5.0, conflicts_with = "rounds")]
    pub(crate) duration: f64,
    /// Stop after this many rounds (at least 1) instead of after --duration.
    #[arg(long)]
    pub(crate) rounds: Option<u64>,
    /// Open loop: send this many frames per second in total, whatever the clients receive (at
    /// least 1, and enough to send a frame within --duration).
    #[arg(long)]
    pub(crate) rate: Option<u64>,
    /// Which server the bench starts (not with --target; with --sweep: --sweep-servers).
    #[arg(long, value_enum, default_value_t = Kind::Embedded, conflicts_with_all = ["target", "sweep"])]
    pub(crate) server: Kind,
    /// Serve wss: start the server with TLS, with a certificate for 127.0.0.1 and localhost
    /// made at start (the same as --server embedded-tls; the other servers speak ws only).
    #[arg(long, conflicts_with_all = ["target", "sweep", "nodes"])]
    pub(crate) tls: bool,
    /// Measure an external relay server at ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH
    /// instead (one run: not with --sweep or --repeat).
    #[arg(long, conflicts_with_all = ["sweep", "repeat"])]
    pub(crate) target: Option<String>,
    /// Trust the CA certificates of this PEM file for a wss:// --target (instead of the
    /// system's roots).
    #[arg(long, value_name = "PEM", requires = "target")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// Shards (threads) of the shardcast server the bench starts, 1 to 1024. Default: the number
    /// of cores. (Bun and Node `ws` run their relay on one thread: refused when only they run.)
    #[arg(long, conflicts_with = "target", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub(crate) shards: Option<usize>,
    /// Bytes each client's queue may hold on the shardcast engine the bench starts (the
    /// embedded servers; not axum, naive, bun or node-ws). Default: the server's (1 MiB).
    #[arg(long, conflicts_with = "target")]
    pub(crate) client_queue_bytes: Option<usize>,
    /// Slow-consumer policy of the shardcast engine the bench starts (the embedded servers;
    /// not axum, naive, bun or node-ws). Default: disconnect.
    #[arg(long, value_enum, conflicts_with = "target")]
    pub(crate) slow_consumer: Option<Policy>,
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
    #[arg(long, value_name = "PATH", requires = "nodes")]
    pub(crate) nats_server: Option<PathBuf>,
    /// Print one JSON object on standard output instead of the summary (with --sweep: keyed
    /// rows of medians, ranges and ratios; see docs/MEASUREMENTS.md).
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print the figures as CSV on standard output instead of the summary: a header line, then
    /// a line per run (with --sweep: per row, server and median, min or max).
    #[arg(long)]
    pub(crate) csv: bool,
    /// Fail (exit status 1, after the report) if a p99 latency is over this, with its unit:
    /// 800us (or µs), 5ms, 0.5s. With --sweep or --repeat: every server's median p99 of every
    /// row. Lost frames and connections the server closed always fail a run.
    #[arg(long, value_name = "LATENCY", value_parser = latency)]
    pub(crate) max_p99: Option<Duration>,
    /// Run a matrix of clients x window x payload against each of --sweep-servers, and print
    /// one table with the ratio between servers on each row (--topics and --subscriptions apply
    /// to every row).
    #[arg(long)]
    pub(crate) sweep: bool,
    /// Client counts of the sweep (each as --clients).
    #[arg(long, requires = "sweep", value_delimiter = ',', default_value = "1000,10000", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) sweep_clients: Vec<u64>,
    /// Windows of the sweep (each as --window).
    #[arg(long, requires = "sweep", value_delimiter = ',', default_value = "1,16,64", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) sweep_windows: Vec<u64>,
    /// Payload sizes of the sweep (each as --payload).
    #[arg(long, requires = "sweep", value_delimiter = ',', default_value = "32", value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub(crate) sweep_payloads: Vec<u64>,
    /// Servers of the sweep, the first being the one the others are compared to
    /// (embedded,embedded-tls: ws against wss).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "embedded,naive",
        requires = "sweep"
    )]
    pub(crate) sweep_servers: Vec<Kind>,
    /// Runs of each sweep row, the servers taking turns; the table gives medians and the range
    /// of the ratios measured side by side (for machines whose speed drifts). Without --sweep,
    /// the single run is repeated and reported as a sweep of one row.
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
        self.check_servers()?;
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

    /// The payloads' format: JSON with `--payload-json`, else binary.
    pub(crate) fn format(&self) -> Format {
        if self.payload_json.is_some() {
            Format::Json
        } else {
            Format::Binary
        }
    }

    /// The slow-consumer policy of the engines the bench starts (`--slow-consumer`).
    pub(crate) fn policy(&self) -> Policy {
        self.slow_consumer.unwrap_or(Policy::Disconnect)
    }

    /// Refuses a server twice in a sweep (their rows would share a name), and the options of
    /// the server the bench starts when no server of the run takes them. With --target, clap
    /// refuses them.
    fn check_servers(&self) -> Result<(), String> {
        let kinds = if self.sweep {
            let mut seen = Vec::new();
            for &kind in &self.sweep_servers {
                if seen.contains(&kind) {
                    return Err(format!("--sweep-servers names {} twice", kind.name()));
                }
                seen.push(kind);
            }
            seen
        } else if self.target.is_some() {
            return Ok(());
        } else {
            vec![self.server]
        };
        let mut nodes = self.nodes.clone();
        nodes.sort_unstable();
        if let Some(w) = nodes.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("--nodes names {} twice", w[0]));
        }
        let servers = if self.sweep {
            "none of --sweep-servers takes it"
        } else {
            "the --server does not take it"
        };
        let engine = kinds.iter().any(|k| k.is_engine());
        if let Some(flag) = [
            self.client_queue_bytes.map(|_| "--client-queue-bytes"),
            self.slow_consumer.map(|_| "--slow-consumer"),
        ]
        .into_iter()
        .flatten()
        .find(|_| !engine)
        {
            return Err(format!(
                "{flag} applies to shardcast's engine (the embedded servers): {servers}"
            ));
        }
        if self.shards.is_some() && !kinds.iter().any(|k| k.is_shardcast()) {
            return Err(format!(
                "--shards applies to the servers of `shardcast serve`: {servers}"
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `shardcast bench` alone, as main parses it.
    #[derive(Debug, Parser)]
    struct Bench {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Bench::try_parse_from(std::iter::once("bench").chain(flags.iter().copied())).map(|b| b.args)
    }

    /// `flags` parse but [`Args::check`] refuses them, naming `name`.
    fn refused(flags: &[&str], name: &str) {
        let args = parse(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        let err = args.check().expect_err("refused");
        assert!(err.contains(name), "{flags:?}: {err}");
    }

    #[test]
    fn sweep_flags_need_sweep() {
        for flags in [
            &["--sweep-clients", "1"][..],
            &["--sweep-windows", "1,2"],
            &["--sweep-payloads", "64"],
            &["--sweep-servers", "embedded"],
        ] {
            let err = parse(flags).expect_err("refused without --sweep");
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert!(err.to_string().contains("--sweep"), "{err}");
            let with = [flags, &["--sweep"]].concat();
            assert!(parse(&with).is_ok(), "{with:?}");
        }
    }

    #[test]
    fn single_run_flags_are_refused_where_they_would_be_ignored() {
        for flags in [
            &["--sweep", "--clients", "10"][..],
            &["--sweep", "--window", "2"],
            &["--sweep", "--payload", "64"],
            &["--sweep", "--server", "naive"],
            &["--rounds", "3", "--duration", "1"],
            &["--target", "ws://127.0.0.1:1/", "--server", "naive"],
            &["--target", "ws://127.0.0.1:1/", "--shards", "2"],
            &[
                "--target",
                "ws://127.0.0.1:1/",
                "--slow-consumer",
                "drop-newest",
            ],
            &[
                "--target",
                "ws://127.0.0.1:1/",
                "--client-queue-bytes",
                "4096",
            ],
            &["--target", "ws://127.0.0.1:1/", "--repeat", "3"],
            &["--target", "ws://127.0.0.1:1/", "--sweep"],
            &["--nats-server", "/bin/true"],
            &["--tls", "--nodes", "2"],
            &["--json", "--csv"],
            &["--payload-json", "1024", "--payload", "64"],
            &["--payload-json", "1024", "--sweep"],
            &["--payload-json", "255"],
        ] {
            let err = parse(flags).expect_err(&format!("{flags:?} refused"));
            assert_eq!(err.exit_code(), 2, "{flags:?}");
        }
        // Their defaults go with anything.
        assert!(parse(&["--sweep", "--repeat", "2"]).is_ok());
        assert!(parse(&["--sweep", "--deflate"]).is_ok());
        let json =
            parse(&["--payload-json", "1024", "--deflate", "--topics", "10"]).expect("parses");
        assert_eq!((json.format(), json.deflate), (Format::Json, true));
        assert_eq!(json.check(), Ok(()));
        assert!(parse(&["--target", "ws://127.0.0.1:1/", "--rounds", "3"]).is_ok());
    }

    #[test]
    fn server_options_are_refused_for_servers_that_take_none() {
        refused(&["--server", "bun", "--shards", "2"], "--shards");
        refused(
            &["--server", "naive", "--client-queue-bytes", "4096"],
            "--client-queue-bytes",
        );
        refused(
            &["--server", "axum", "--slow-consumer", "drop-oldest"],
            "--slow-consumer",
        );
        refused(
            &[
                "--sweep",
                "--sweep-servers",
                "naive,bun",
                "--slow-consumer",
                "drop-oldest",
            ],
            "--slow-consumer",
        );
        refused(
            &["--sweep", "--sweep-servers", "embedded,naive,embedded"],
            "twice",
        );
        refused(&["--nodes", "1,2,1"], "twice");
        for ok in [
            &["--server", "naive", "--shards", "2"][..],
            &["--tls", "--client-queue-bytes", "4096"],
            &[
                "--sweep",
                "--sweep-servers",
                "naive,embedded",
                "--slow-consumer",
                "drop-oldest",
            ],
        ] {
            let args = parse(ok).expect("parses");
            assert_eq!(args.check(), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn max_p99_takes_a_latency_with_its_unit() {
        for (text, micros) in [
            ("800us", 800),
            ("800µs", 800),
            ("5ms", 5000),
            ("0.5ms", 500),
            ("0.25s", 250_000),
            ("1us", 1),
        ] {
            assert_eq!(latency(text), Ok(Duration::from_micros(micros)), "{text}");
        }
        for text in ["5", "5 minutes", "ms", "-1ms", "0us", "0.5us", "1e3us"] {
            assert!(latency(text).is_err(), "{text} accepted");
        }
        let args = parse(&["--max-p99", "2ms"]).expect("parses");
        assert_eq!(args.max_p99, Some(Duration::from_millis(2)));
        let err = parse(&["--max-p99", "2"]).expect_err("no unit");
        assert!(err.to_string().contains("give a unit"), "{err}");
    }
}

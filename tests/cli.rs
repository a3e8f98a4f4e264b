//! The `shardcast` command refuses what it cannot do with a one-line error naming the flag or
//! the address, and a non-zero exit status: flags out of range, values with which a bench
//! would measure nothing, an address that does not resolve or that something listens on.

mod common;

use common::serve::{Serve, run_to_end, shardcast};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

/// Every wait for the command is bounded by this. Refusals come at once; it is long only so
/// that a run the command should have refused, or a slow name lookup, ends in a clear failure.
const WAIT: Duration = Duration::from_secs(30);

/// Runs `shardcast args` to its end; returns its exit status and standard error.
fn run(args: &[&str]) -> (ExitStatus, String) {
    run_with(args, &[])
}

/// Runs `shardcast args` with the environment variables `env` to its end; returns its exit
/// status and standard error.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let (status, _, stderr) = run_to_end(shardcast(args).envs(env.iter().copied()), WAIT);
    (status, stderr)
}

/// Runs `shardcast args`, which must fail with a first line of standard error that contains
/// each of `names`; returns that line.
fn refused(args: &[&str], names: &[&str]) -> String {
    let (status, stderr) = run(args);
    assert!(
        !status.success(),
        "shardcast {args:?} succeeded; stderr: {stderr:?}"
    );
    let line = stderr.lines().next().unwrap_or_default().to_owned();
    for name in names {
        assert!(
            line.contains(name),
            "shardcast {args:?}: the error names {name:?}; stderr: {stderr:?}"
        );
    }
    line
}

/// The start of a bench of one client, to which a test adds the flags under test.
const ONE_CLIENT: [&str; 3] = ["bench", "--clients", "1"];

/// `base` and then `more`.
fn args<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    [base, more].concat()
}

#[test]
fn bench_refuses_a_rate_of_zero_naming_the_flag() {
    refused(
        &["bench", "--clients", "1", "--duration", "1", "--rate", "0"],
        &["--rate"],
    );
}

#[test]
fn bench_refuses_a_rate_too_low_to_send_a_frame_within_the_duration() {
    refused(
        &args(&ONE_CLIENT, &["--duration", "0.5", "--rate", "1"]),
        &["--rate 1", "--duration 0.5"],
    );
    refused(
        &["bench", "--clients", "1", "--duration", "1", "--rate", "1"],
        &["--rate 1", "--duration 1"],
    );
}

#[test]
fn bench_refuses_a_duration_out_of_range_stating_the_range_it_accepts() {
    for duration in ["0", "-1", "86401", "NaN"] {
        let flag = format!("--duration={duration}");
        let line = refused(&["bench", &flag], &["--duration"]);
        assert_eq!(
            line,
            "shardcast: --duration must be more than 0 and at most 86400 seconds"
        );
    }
}

#[test]
fn bench_refuses_zero_rounds_naming_the_flag() {
    refused(&["bench", "--clients", "1", "--rounds", "0"], &["--rounds"]);
}

#[test]
fn bench_refuses_zero_clients_publishers_or_window_naming_the_flag() {
    for flag in ["--clients", "--publishers", "--window"] {
        refused(&["bench", flag, "0", "--duration", "0.2"], &[flag]);
    }
}

#[test]
fn bench_refuses_sweep_values_that_its_single_run_flags_refuse() {
    let sweep = [
        "bench",
        "--sweep",
        "--sweep-servers",
        "embedded",
        "--duration",
        "0.2",
    ];
    for (flag, value) in [
        ("--sweep-clients", "1,0"),
        ("--sweep-windows", "0"),
        ("--sweep-payloads", "8"),
    ] {
        refused(&args(&sweep, &[flag, value]), &[flag]);
    }
}

#[test]
fn bench_refuses_more_subscriptions_than_topics_naming_both_flags() {
    refused(
        &args(
            &ONE_CLIENT,
            &["--rounds", "1", "--topics", "3", "--subscriptions", "4"],
        ),
        &["--subscriptions 4", "--topics 3"],
    );
}

#[test]
fn bench_refuses_subscriptions_without_topics_naming_the_flag() {
    refused(
        &args(&ONE_CLIENT, &["--rounds", "1", "--subscriptions", "2"]),
        &["--topics"],
    );
}

#[test]
fn bench_refuses_a_payload_too_small_for_the_topic_stamp_naming_the_flag() {
    let topics = args(&ONE_CLIENT, &["--rounds", "1", "--topics", "2"]);
    refused(
        &args(&topics, &["--payload", "16"]),
        &["--payload 16", "--topics"],
    );
    // A sweep takes its clients from --sweep-clients: --clients would be refused.
    refused(
        &[
            "bench",
            "--rounds",
            "1",
            "--topics",
            "2",
            "--sweep",
            "--sweep-payloads",
            "32,16",
        ],
        &["--sweep-payloads 16", "--topics"],
    );
}

#[test]
fn bench_refuses_zero_shards_naming_the_flag() {
    refused(
        &args(&ONE_CLIENT, &["--duration", "0.2", "--shards", "0"]),
        &["--shards"],
    );
}

#[test]
fn bench_says_why_the_server_it_starts_refused_to_start() {
    refused(
        &args(
            &ONE_CLIENT,
            &["--duration", "0.2", "--client-queue-bytes", "10"],
        ),
        &["embedded server did not start", "--client-queue-bytes"],
    );
}

#[test]
fn serve_refuses_a_max_message_size_below_125_naming_the_flag() {
    let line = refused(
        &["serve", "--addr", "127.0.0.1:0", "--max-message-size", "10"],
        &["--max-message-size", "125"],
    );
    assert!(!line.contains("_bytes_max"), "no internal field: {line:?}");
}

#[test]
fn serve_refuses_a_client_queue_below_1_kib_naming_the_flag() {
    let serve = ["serve", "--addr", "127.0.0.1:0"];
    let line = refused(
        &args(&serve, &["--client-queue-bytes", "10"]),
        &["--client-queue-bytes"],
    );
    assert!(!line.contains("_bytes_max"), "no internal field: {line:?}");
}

#[test]
fn serve_refuses_an_unknown_driver_naming_the_flag_or_the_variable() {
    refused(
        &["serve", "--addr", "127.0.0.1:0", "--driver", "threads"],
        &["--driver", "threads"],
    );
    let (status, stderr) = run_with(
        &["serve", "--addr", "127.0.0.1:0"],
        &[("SHARDCAST_DRIVER", "threads")],
    );
    assert!(!status.success(), "exit status {status}");
    let line = stderr.lines().next().unwrap_or_default();
    for name in ["SHARDCAST_DRIVER", "event-loop", "tasks"] {
        assert!(line.contains(name), "{name:?} not in {line:?}");
    }
}

#[test]
fn serve_refuses_zero_shards_naming_the_flag_on_either_server() {
    refused(
        &["serve", "--addr", "127.0.0.1:0", "--shards", "0"],
        &["--shards"],
    );
    refused(
        &["serve", "--naive", "--addr", "127.0.0.1:0", "--shards", "0"],
        &["--shards"],
    );
}

#[test]
fn serve_refuses_an_addr_that_does_not_resolve_naming_it() {
    refused(
        &["serve", "--addr", "nosuch.invalid:9001"],
        &["--addr", "nosuch.invalid:9001"],
    );
}

#[test]
fn serve_on_an_address_a_listener_holds_fails_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for server in [None, Some("--naive"), Some("--axum")] {
        let mut serve = vec!["serve", "--addr", &addr, "--shards", "2"];
        serve.extend(server);
        let line = refused(&serve, &[&addr]);
        assert_eq!(
            line,
            format!("shardcast: address {addr} is already in use"),
            "{server:?}"
        );
    }
}

#[test]
fn serve_on_the_port_of_a_running_engine_fails_naming_the_address() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = common::builder().shards(2).build().unwrap();
    let addr = runtime
        .block_on(engine.listen("127.0.0.1:0"))
        .unwrap()
        .to_string();

    refused(&["serve", "--addr", &addr, "--shards", "2"], &[&addr]);
    runtime.block_on(engine.shutdown(Duration::from_secs(1)));
}

#[test]
fn a_second_serve_on_the_port_of_a_running_one_fails_naming_the_address() {
    let mut first = Serve::start(&[]);
    let addr: SocketAddr =
        (first.addr.parse()).unwrap_or_else(|_| panic!("not an address: {:?}", first.addr));
    let addr = addr.to_string();

    refused(&["serve", "--addr", &addr, "--shards", "2"], &[&addr]);
    assert!(
        first.child.try_wait().expect("try_wait").is_none(),
        "the first server still runs"
    );
}

#[test]
fn bench_refuses_nodes_with_a_target_or_a_baseline_naming_the_flag() {
    refused(
        &["bench", "--nodes", "2", "--target", "ws://127.0.0.1:1/"],
        &["--nodes", "--target"],
    );
    refused(&["bench", "--nodes", "2", "--server", "bun"], &["--nodes"]);
    refused(&["bench", "--nodes", "0"], &["--nodes"]);
}

/// A bench of 20 clients, window 2, 10 rounds: about a second, even in a debug build.
const TINY_BENCH: [&str; 7] = [
    "bench",
    "--clients",
    "20",
    "--window",
    "2",
    "--rounds",
    "10",
];

#[test]
fn bench_refuses_flags_with_exit_status_2_naming_them() {
    for (flags, name) in [
        (&["bench", "--sweep-clients", "1"][..], "--sweep"),
        (&["bench", "--sweep", "--clients", "10"], "--clients"),
        (&["bench", "--rounds", "0"], "--rounds"),
        (&["bench", "--max-p99", "5"], "--max-p99"),
        (&["bench", "--payload-json", "100"], "--payload-json"),
        (
            &["bench", "--payload-json", "1024", "--payload", "64"],
            "--payload",
        ),
    ] {
        let (status, stderr) = run(flags);
        assert_eq!(status.code(), Some(2), "shardcast {flags:?}: {stderr}");
        assert!(stderr.contains(name), "shardcast {flags:?}: {stderr}");
    }
}

#[test]
fn bench_passes_a_tiny_run_that_lost_nothing_within_its_max_p99() {
    let (status, stdout, stderr) = run_to_end(
        &mut shardcast(args(&TINY_BENCH, &["--max-p99", "10s", "--csv"])),
        WAIT,
    );
    assert!(status.success(), "{status}: {stderr}");
    let mut lines = stdout.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("row,stat,runs,server,"))
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("0,run,1,embedded,20,"))
    );
}

#[test]
fn bench_fails_a_run_over_its_max_p99_after_printing_the_report() {
    let (status, stdout, stderr) = run_to_end(
        &mut shardcast(args(&TINY_BENCH, &["--max-p99", "1us", "--json"])),
        WAIT,
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.starts_with("{\"server\":\"embedded\""), "{stdout}");
    assert!(stdout.contains("\"lost\":0,"), "{stdout}");
    assert!(
        stderr.contains("shardcast: bench failed: embedded: p99 latency ")
            && stderr.contains(" is over --max-p99 1µs"),
        "{stderr}"
    );
}

//! `shardcast serve`'s flags for operators, against the real binary: `--allowed-origin`,
//! `--ping-interval`, `--heartbeat-timeout`, `--max-connections` and `--log-format json`.

mod common;

use common::serve::{Serve, run_to_end, shardcast};
use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Tries an upgrade of `ws://addr/` with `origin` (none if `None`): the client, or the error.
async fn upgrade(addr: &str, origin: Option<&str>) -> Result<Client, WsError> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("an answer in time")
        .map(|(ws, _)| ws)
}

/// The HTTP status an upgrade was refused with.
fn refused_status(result: Result<Client, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

#[tokio::test]
async fn allowed_origin_accepts_the_listed_origins_only_and_refuses_others_with_403() {
    let server = Serve::start(&[
        "--allowed-origin",
        "https://a.example,https://b.example:8443",
        "--allowed-origin",
        "https://c.example",
    ]);
    for origin in [
        Some("http://evil.example"),
        Some("https://a.example.evil.example"),
        Some("http://a.example"),
        None,
    ] {
        assert_eq!(
            refused_status(upgrade(&server.addr, origin).await),
            403,
            "{origin:?}"
        );
    }
    let mut clients = Vec::new();
    for origin in [
        "https://a.example",
        "https://b.example:8443",
        "https://c.example",
    ] {
        clients.push(
            upgrade(&server.addr, Some(origin))
                .await
                .unwrap_or_else(|e| panic!("{origin} refused: {e}")),
        );
    }
    send_text(&mut clients[0], "allowed").await;
    for ws in clients.iter_mut() {
        assert_eq!(next_data(ws).await, Message::text("allowed"));
    }
}

#[tokio::test]
async fn without_allowed_origin_any_origin_is_accepted_and_a_public_address_is_warned_about() {
    // Loopback: no warning, and any origin (or none) is upgraded.
    let mut local = Serve::start(&[]);
    upgrade(&local.addr, Some("http://evil.example"))
        .await
        .expect("any origin by default");
    upgrade(&local.addr, None).await.expect("no origin");
    local.terminate();
    let (_, stderr) = local.exit_status().await;
    assert!(!stderr.contains("--allowed-origin"), "{stderr}");

    // Every address, without --allowed-origin: one warning line naming the flag and the risk.
    let mut public = Serve::start_on("0.0.0.0:0", &[]);
    public.terminate();
    let (_, stderr) = public.exit_status().await;
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("--allowed-origin"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("WARN"), "{stderr}");
    assert!(warnings[0].contains("any origin"), "{stderr}");
    assert!(warnings[0].contains("hijacking"), "{stderr}");

    // With it: no warning.
    let mut listed = Serve::start_on("0.0.0.0:0", &["--allowed-origin", "https://a.example"]);
    listed.terminate();
    let (_, stderr) = listed.exit_status().await;
    assert!(!stderr.contains("hijacking"), "{stderr}");
}

#[tokio::test]
async fn ping_interval_and_heartbeat_timeout_values_are_accepted() {
    for flags in [
        &["--ping-interval", "off"][..],
        &["--ping-interval", "off", "--heartbeat-timeout", "500ms"],
        &["--ping-interval", "500ms", "--heartbeat-timeout", "2s"],
        &["--ping-interval", "15s"],
        &["--heartbeat-timeout", "1s"],
        &["--max-connections", "1"],
    ] {
        let server = Serve::start(flags);
        let mut ws = server.connect().await;
        send_text(&mut ws, "up").await;
        assert_eq!(next_text(&mut ws).await, "up", "{flags:?}");
    }
}

#[test]
fn bad_ping_heartbeat_and_connection_flags_are_refused_with_status_2_and_a_clear_message() {
    let serve = ["serve", "--addr", "127.0.0.1:0"];
    for (flags, says) in [
        (
            &["--ping-interval", "5s", "--heartbeat-timeout", "5s"][..],
            &[
                "--ping-interval 5s",
                "shorter than --heartbeat-timeout (5s)",
            ][..],
        ),
        (
            &["--ping-interval", "30s"],
            &["--ping-interval 30s", "--heartbeat-timeout (20s)", "off"],
        ),
        (
            &["--ping-interval", "5"],
            &["--ping-interval", "give a unit"],
        ),
        (&["--ping-interval", "never"], &["--ping-interval", "off"]),
        (&["--heartbeat-timeout", "0s"], &["--heartbeat-timeout"]),
        (&["--max-connections", "0"], &["--max-connections"]),
        (&["--allowed-origin", ","], &["--allowed-origin"]),
        (
            &["--naive", "--allowed-origin", "https://a.example"],
            &["--allowed-origin"],
        ),
        (&["--log-format", "xml"], &["--log-format"]),
    ] {
        let (status, _, stderr) = run_to_end(&mut shardcast(serve.iter().chain(flags)), WAIT);
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{flags:?} should say {s:?}: {stderr}");
        }
    }
}

/// Past `--max-connections`, the engine's listener closes a new connection at once, before any
/// HTTP answer; once a client leaves, a new one is served again.
#[tokio::test]
async fn max_connections_closes_a_connection_over_the_limit_before_its_upgrade() {
    let server = Serve::start(&["--max-connections", "2"]);
    let mut clients = server.connect_many(2).await;
    match upgrade(&server.addr, None).await {
        Ok(_) => panic!("a third connection was upgraded"),
        Err(WsError::Http(response)) => panic!("expected no HTTP answer, got {response:?}"),
        Err(_closed) => {}
    }
    // The two are still served.
    send_text(&mut clients[0], "still two").await;
    for ws in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "still two");
    }
    // One leaves: its place is free again (once the server has seen it go).
    let mut gone = clients.pop().unwrap();
    gone.close(None).await.unwrap();
    drop(gone);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = upgrade(&server.addr, None).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(ms(100)).await;
    }
    let mut again = again.expect("a place freed by a client that left");
    send_text(&mut again, "back").await;
    assert_eq!(next_text(&mut again).await, "back");
}

/// Behind axum (`--axum`), the same limit is answered with 503.
#[tokio::test]
async fn max_connections_behind_axum_answers_503() {
    let server = Serve::start(&["--axum", "--max-connections", "2"]);
    let _clients = server.connect_many(2).await;
    assert_eq!(refused_status(upgrade(&server.addr, None).await), 503);
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_log_line() {
    let mut server = Serve::start(&["--log-format", "json"]);
    server.terminate();
    let (status, stderr) = server.exit_status().await;
    assert!(status.success(), "{status:?}: {stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let serving = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving ws://"))
        })
        .unwrap_or_else(|| panic!("no `serving` event: {stderr}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["timestamp"].is_string(), "{serving}");
    let stopped = events
        .iter()
        .find(|e| e["fields"]["message"] == "stopped")
        .unwrap_or_else(|| panic!("no `stopped` event: {stderr}"));
    assert_eq!(stopped["fields"]["clients"], 0, "{stopped}");
    // Every log line is JSON; only the plain announcements of the command itself are not.
    for line in stderr.lines().filter(|l| !l.starts_with('{')) {
        assert!(line.starts_with("shardcast: "), "{line:?} in {stderr}");
    }
}

/// The flags of `ExecStart=` in examples/deploy/shardcast.service (continuation lines joined),
/// after the binary and `serve`.
fn unit_flags() -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/deploy/shardcast.service"
    ))
    .expect("the unit");
    let joined = unit.replace("\\\n", " ");
    let exec = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec.split_whitespace().map(str::to_owned);
    assert!(
        words.next().is_some_and(|b| b.ends_with("/shardcast")),
        "{exec}"
    );
    assert_eq!(words.next().as_deref(), Some("serve"), "{exec}");
    words.collect()
}

/// The systemd unit's command line runs as written, but for its addresses (an ephemeral
/// loopback port, a free metrics port): its flags are accepted, its origin allowed and others
/// refused, and its logs are JSON.
#[tokio::test]
async fn the_systemd_units_command_line_serves() {
    let mut flags = unit_flags();
    let mut origin = None;
    let mut i = 0;
    while i < flags.len() {
        match flags[i].as_str() {
            "--addr" => {
                flags.drain(i..i + 2);
                continue;
            }
            "--metrics-addr" => flags[i + 1] = format!("127.0.0.1:{}", free_port()),
            "--allowed-origin" => origin = Some(flags[i + 1].clone()),
            _ => {}
        }
        i += 1;
    }
    let origin = origin.expect("the unit lists an --allowed-origin");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut server = Serve::start(&flags);
    let mut ws = upgrade(&server.addr, Some(&origin))
        .await
        .expect("the unit's origin is allowed");
    send_text(&mut ws, "deployed").await;
    assert_eq!(next_text(&mut ws).await, "deployed");
    assert_eq!(
        refused_status(upgrade(&server.addr, Some("http://evil.example")).await),
        403
    );
    server.terminate();
    let (status, stderr) = server.exit_status().await;
    assert!(status.success(), "{status:?}: {stderr}");
    let first = stderr.lines().next().expect("a log line");
    serde_json::from_str::<serde_json::Value>(first).unwrap_or_else(|e| panic!("{first}: {e}"));
}

//! TLS: a stream that buffers what it is given (as TLS does) is flushed by the engine; the
//! `shardcast` command serves `wss` with `--tls-cert`/`--tls-key` (the TLS handshake runs on the
//! shard, and a failed one is a failed handshake), and `bench` measures `wss` with a certificate
//! it makes itself or a CA it is given.

mod common;

use common::serve::{Serve, run_to_end, scrape, shardcast};
use common::*;
use shardcast::Audience;
use std::time::Duration;

#[tokio::test]
async fn a_stream_that_buffers_writes_gets_its_101_and_every_broadcast() {
    let engine = builder().shards(1).build().expect("engine");
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    // Holds what it is given until it is flushed (or 64 KiB pile up), as a TLS stream may
    // when its socket is full.
    let buffering = tokio::io::BufWriter::with_capacity(64 << 10, server);
    engine.register(buffering).await.expect("register");
    // The 101 is flushed, or this times out.
    let mut ws = upgrade_over(client, "/").await;
    eventually(|| engine.client_count() == 1).await;
    for text in ["one", "two"] {
        broadcast(&engine, text, Audience::ALL).await;
        assert_eq!(next_text(&mut ws).await, text);
    }
    engine.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// `shardcast serve --tls-cert --tls-key`, and `bench` over wss
// ---------------------------------------------------------------------------------------------

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::WebSocketStream;

/// A wss client as the tests see it.
type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A CA, and a certificate for 127.0.0.1 and localhost that it signed, made at test time with
/// rcgen; written as PEM files to a folder of their own, removed on drop.
struct Certs {
    dir: PathBuf,
    /// The CA's certificate (PEM), for `bench --ca`.
    ca: PathBuf,
    /// The server's certificate (PEM).
    cert: PathBuf,
    /// Its private key (PEM).
    key: PathBuf,
    /// The CA's private key (PEM): a key that does not go with `cert`.
    ca_key: PathBuf,
    /// The CA's certificate, for the clients' trust.
    ca_der: CertificateDer<'static>,
}

impl Certs {
    fn new() -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("parameters")
            .signed_by(&key, &issuer)
            .expect("certificate");
        let dir = std::env::temp_dir().join(format!(
            "shardcast-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the folder");
        let certs = Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca_key: dir.join("ca-key.pem"),
            ca_der: ca.der().clone(),
            dir,
        };
        std::fs::write(&certs.ca, ca.pem()).expect("write");
        std::fs::write(&certs.cert, cert.pem()).expect("write");
        std::fs::write(&certs.key, key.serialize_pem()).expect("write");
        std::fs::write(&certs.ca_key, ca_key_pem).expect("write");
        certs
    }

    /// `--tls-cert CERT --tls-key KEY`.
    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
        ]
    }

    /// Starts `shardcast serve` over wss with this certificate, and `more` flags.
    fn serve(&self, more: &[&str]) -> Serve {
        let mut flags = self.flags();
        flags.extend(more.iter().map(|f| (*f).to_owned()));
        Serve::start_wss(&flags)
    }

    /// A file of this folder with `contents`.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let file = self.dir.join(name);
        std::fs::write(&file, contents).expect("write");
        file
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// `wss` clients of the server, which the common helpers do not make.
impl Serve {
    /// Connects a wss client to `path`, trusting the CA of `certs` and checking the name
    /// `localhost` (the server is at 127.0.0.1).
    async fn wss(&self, certs: &Certs, path: &str) -> Wss {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs.ca_der.clone()).expect("trust the CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let connecting = async {
            let tcp = TcpStream::connect(&self.addr).await.expect("connect");
            let name = ServerName::try_from("localhost").expect("a server name");
            let tls = connector.connect(name, tcp).await.expect("TLS handshake");
            let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost{path}"), tls)
                .await
                .expect("upgrade");
            ws
        };
        tokio::time::timeout(WAIT, connecting)
            .await
            .expect("connect in time")
    }
}

#[tokio::test]
async fn serve_with_a_certificate_relays_between_wss_clients() {
    let certs = Certs::new();
    let serve = certs.serve(&[]);
    let mut clients = [serve.wss(&certs, "/").await, serve.wss(&certs, "/").await];
    for (from, text) in [(0, "over TLS"), (1, "and back")] {
        send_text(&mut clients[from], text).await;
        for ws in &mut clients {
            assert_eq!(next_text(ws).await, text);
        }
    }
}

#[tokio::test]
async fn serve_with_a_certificate_speaks_the_topics_protocol_and_echoes() {
    let certs = Certs::new();
    let topics = certs.serve(&["--topics"]);
    let mut reader = topics.wss(&certs, "/?sub=news").await;
    let mut writer = topics.wss(&certs, "/").await;
    send_text(&mut writer, "pub news through TLS").await;
    assert_eq!(next_text(&mut reader).await, "through TLS");

    let echo = certs.serve(&["--echo"]);
    let mut a = echo.wss(&certs, "/").await;
    let mut b = echo.wss(&certs, "/").await;
    send_text(&mut a, "mine").await;
    send_text(&mut b, "yours").await;
    assert_eq!(next_text(&mut a).await, "mine");
    assert_eq!(next_text(&mut b).await, "yours");
}

/// The handshake failures by `reason`, summed over the shards, from `GET /metrics` (0 if none
/// is reported yet).
async fn handshake_failures(metrics: &str, cause: &str) -> f64 {
    let label = format!("reason=\"{cause}\"");
    scrape(metrics)
        .await
        .lines()
        .filter(|l| l.starts_with("shardcast_handshake_failures_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_plain_client_on_the_tls_port_fails_its_handshake_and_tls_clients_keep_working() {
    let certs = Certs::new();
    let metrics = format!("127.0.0.1:{}", free_port());
    let serve = certs.serve(&["--metrics-addr", &metrics]);
    let mut before = serve.wss(&certs, "/").await;

    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/", serve.addr)),
    )
    .await
    .expect("refused in time");
    assert!(
        plain.is_err(),
        "a plain ws client was upgraded on the TLS port"
    );

    let mut after = serve.wss(&certs, "/").await;
    send_text(&mut before, "still here").await;
    assert_eq!(next_text(&mut before).await, "still here");
    assert_eq!(next_text(&mut after).await, "still here");

    // The counters reach the exporter every second: wait for the failure, bounded.
    until_async(
        async || handshake_failures(&metrics, "wrap_failed").await >= 1.0,
        || "the failed TLS handshake was not counted".to_owned(),
    )
    .await;
    assert_eq!(handshake_failures(&metrics, "wrap_failed").await, 1.0);
    assert_eq!(handshake_failures(&metrics, "malformed").await, 0.0);
}

/// Runs `shardcast args` to its end (bounded); returns its exit status, standard output and
/// standard error.
fn run(args: &[String]) -> (ExitStatus, String, String) {
    run_to_end(&mut shardcast(args), Duration::from_secs(60))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs `shardcast args`, which must fail with a first line of standard error naming each of
/// `names`.
fn refused(args: &[String], names: &[&str]) {
    refused_in(args, names, 1);
}

/// Runs `shardcast args`, which must fail with standard error naming each of `names` in its
/// first `lines` lines.
fn refused_in(args: &[String], names: &[&str], lines: usize) {
    let (status, _, stderr) = run(args);
    assert!(!status.success(), "shardcast {args:?} succeeded");
    let line = stderr.lines().take(lines).collect::<Vec<_>>().join("\n");
    for name in names {
        assert!(
            line.contains(name),
            "shardcast {args:?}: the error names {name:?}; stderr: {stderr:?}"
        );
    }
}

#[test]
fn serve_refuses_tls_files_it_cannot_use_naming_the_flag_and_the_file() {
    let certs = Certs::new();
    let serve = |cert: &Path, key: &Path| {
        let mut a = args(&["serve", "--addr", "127.0.0.1:0"]);
        a.extend([
            "--tls-cert".into(),
            path(cert),
            "--tls-key".into(),
            path(key),
        ]);
        a
    };
    let missing = certs.dir.join("missing.pem");
    refused(
        &serve(&missing, &certs.key),
        &["cannot read --tls-cert", &path(&missing)],
    );
    refused(
        &serve(&certs.cert, &missing),
        &["cannot read --tls-key", &path(&missing)],
    );
    let garbage = certs.file(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
    );
    refused(
        &serve(&garbage, &certs.key),
        &["--tls-cert", &path(&garbage), "not valid PEM"],
    );
    let empty = certs.file("empty.pem", "");
    refused(
        &serve(&empty, &certs.key),
        &["--tls-cert", &path(&empty), "no certificate"],
    );
    // A certificate where the key should be.
    refused(
        &serve(&certs.cert, &certs.cert),
        &["--tls-key", &path(&certs.cert), "no private key"],
    );
    refused(
        &serve(&certs.cert, &certs.ca_key),
        &[&path(&certs.cert), &path(&certs.ca_key), "usable pair"],
    );
    let mut alone = args(&["serve", "--addr", "127.0.0.1:0", "--tls-cert"]);
    alone.push(path(&certs.cert));
    // clap says what is missing on the line after its own.
    refused_in(&alone, &["--tls-key"], 2);
    let mut naive = serve(&certs.cert, &certs.key);
    naive.push("--naive".into());
    refused(&naive, &["--naive"]);
}

/// Checks a bench's `--json` report: run against `server`, nothing lost, every client got
/// every frame.
fn lost_nothing(stdout: &str, server: &str, clients: u64) {
    assert!(
        stdout.contains(&format!("\"server\":\"{server}\"")),
        "{stdout}"
    );
    assert_eq!(field(stdout, "lost"), 0, "{stdout}");
    assert_eq!(field(stdout, "closed"), 0, "{stdout}");
    assert!(field(stdout, "publishes") > 0, "{stdout}");
    assert_eq!(
        field(stdout, "deliveries"),
        field(stdout, "publishes") * clients,
        "{stdout}"
    );
}

#[test]
fn bench_tls_starts_a_wss_server_with_a_certificate_it_makes_and_loses_nothing() {
    let (status, stdout, stderr) = run(&args(&[
        "bench",
        "--tls",
        "--clients",
        "20",
        "--rounds",
        "20",
        "--json",
    ]));
    assert!(status.success(), "{stderr}");
    lost_nothing(&stdout, "embedded-tls", 20);
}

#[test]
fn bench_measures_a_wss_target_whose_ca_it_is_given_and_refuses_one_it_cannot_trust() {
    let certs = Certs::new();
    let serve = certs.serve(&[]);
    let url = format!("wss://{}/", serve.addr);
    let mut bench = args(&[
        "bench",
        "--target",
        &url,
        "--clients",
        "10",
        "--rounds",
        "10",
    ]);
    bench.extend(["--json".into(), "--ca".into(), path(&certs.ca)]);
    let (status, stdout, stderr) = run(&bench);
    assert!(status.success(), "{stderr}");
    lost_nothing(&stdout, &url, 10);

    // Trusting another CA (the bench's own certificate as one), the server's is refused.
    let mut untrusted = args(&["bench", "--target", &url, "--clients", "1", "--rounds", "1"]);
    untrusted.extend(["--ca".into(), path(&certs.cert)]);
    refused(&untrusted, &["cannot connect", "certificate"]);
}

#[test]
fn bench_tls_refuses_servers_without_tls_and_ca_without_a_target() {
    for server in ["naive", "bun", "node-ws"] {
        refused(
            &args(&["bench", "--tls", "--server", server, "--clients", "1"]),
            &["--tls", server],
        );
    }
    refused_in(
        &args(&["bench", "--ca", "ca.pem", "--clients", "1"]),
        &["--target"],
        2,
    );
    refused(
        &args(&[
            "bench",
            "--target",
            "ws://127.0.0.1:9/",
            "--ca",
            "ca.pem",
            "--clients",
            "1",
        ]),
        &["--ca", "wss://"],
    );
}

#[test]
fn a_sweep_puts_ws_and_wss_side_by_side() {
    let (status, stdout, stderr) = run(&args(&[
        "bench",
        "--sweep",
        "--sweep-clients",
        "10",
        "--sweep-windows",
        "4",
        "--sweep-servers",
        "embedded,embedded-tls",
        "--rounds",
        "10",
    ]));
    assert!(status.success(), "{stderr}");
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("embedded-tls deliveries/s") && header.contains("embedded / embedded-tls"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| 10 | 4 |"))
        .unwrap_or_else(|| panic!("no row for 10 clients, window 4:\n{stdout}"));
    // Each cell under the header cell of its name.
    let names: Vec<&str> = header.split('|').map(str::trim).collect();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let cell = |name: &str| {
        let at = names.iter().position(|n| *n == name);
        at.and_then(|i| cells.get(i).copied())
            .unwrap_or_else(|| panic!("no {name:?} cell in {row}\nunder {header}"))
    };
    assert_eq!(cell("embedded lost"), "0", "ws lost frames: {row}");
    assert_eq!(cell("embedded-tls lost"), "0", "wss lost frames: {row}");
    assert!(
        cell("embedded / embedded-tls").ends_with('x'),
        "no ratio in {row}"
    );
}

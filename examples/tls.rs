//! wss: a relay behind TLS, through the engine's `Wrap`. Each connection's TLS handshake runs
//! on the shard that accepted it, within `Config::handshake_deadline`, so the encrypted stream
//! is born on the shard's reactor; a failed handshake counts as a failed handshake
//! (`wrap_failed`) and never reaches the upgrade.
//!
//! Run with `cargo run --release --example tls -- CERT.pem KEY.pem`, or without arguments for a
//! self-signed certificate for localhost and 127.0.0.1, printed so that a client can trust it;
//! then connect to `wss://localhost:9003/`.

use shardcast::{Audience, Context, Engine, Handler, Incoming, Payload};
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Every message goes to every client.
struct Relay;

impl Handler for Relay {
    fn on_message(&self, ctx: &mut Context<'_>, message: Incoming<'_>) {
        let payload = match message {
            Incoming::Text(text) => Payload::text(text),
            Incoming::Binary(bytes) => Payload::binary(bytes),
        };
        ctx.broadcast(payload, Audience::ALL);
    }
}

/// The certificate chain and key named on the command line, or a self-signed pair.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn identity() -> Result<Identity, Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    if let (Some(cert), Some(key)) = (args.next(), args.next()) {
        let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>()?;
        return Ok((chain, PrivateKeyDer::from_pem_file(key)?));
    }
    let made = rcgen::generate_simple_self_signed(["localhost".into(), "127.0.0.1".into()])?;
    println!("self-signed certificate:\n{}", made.cert.pem());
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    Ok((vec![made.cert.der().clone()], key))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let (chain, key) = identity()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let engine = Engine::builder().handler(Relay).build()?;
    // The closure is the `Wrap`: it runs on the shard, once per accepted connection.
    let addr = engine
        .listen_wrapped("127.0.0.1:9003", move |tcp| acceptor.accept(tcp))
        .await?;
    println!(
        "relay on wss://{addr}/ ({} shards); Ctrl-C stops",
        engine.shard_count()
    );
    tokio::signal::ctrl_c().await?;
    engine.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

//! TLS for the command: the server side of `serve --tls-cert/--tls-key` (a rustls acceptor run
//! through the engine's `Wrap`, so each handshake runs on the shard that owns the socket, within
//! the handshake deadline), the trust of `bench --target wss://` (`--ca`, or the system's roots),
//! and the certificate `bench --tls` makes for its own server.
//!
//! rustls with the `ring` provider throughout: it builds with a C compiler alone, where
//! aws-lc-rs wants cmake (and nasm on Windows), and the NATS bridge already brings it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The crypto of every TLS configuration of the command.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The file at `path`, read whole; the error names the flag and the file.
fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
}

/// Every certificate of the PEM file at `path` (at least one); the error names the flag and
/// the file.
fn certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {} holds no certificate (PEM, \"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// The server configuration of `serve --tls-cert cert --tls-key key`: the certificate chain
/// (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), TLS 1.3 and 1.2, no client
/// certificates, ALPN `http/1.1` (what browsers offer for WebSocket).
///
/// # Errors
///
/// A one-line message naming the flag and the file: unreadable, not PEM, no certificate or
/// key in it, or a key that does not go with the certificate.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates("--tls-cert", cert)?;
    let pem = read("--tls-key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "--tls-key {} holds no private key (PEM: PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ),
        e => format!("--tls-key {} is not valid PEM: {e}", key.display()),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "--tls-cert {} and --tls-key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `Wrap` that runs the TLS handshake on the shard that accepted the connection; a failed
/// handshake fails the wrap, which the engine counts as a failed handshake (`wrap_failed`).
pub(crate) fn acceptor(config: Arc<ServerConfig>) -> impl shardcast::Wrap {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    move |tcp: tokio::net::TcpStream| {
        let accepting = acceptor.accept(tcp);
        async move {
            // At debug, as the engine's own handshake failures: a peer decides how often.
            accepting
                .await
                .inspect_err(|e| tracing::debug!("TLS handshake failed: {e}"))
        }
    }
}

/// What a `bench` client trusts and the name it checks, for one `wss` target.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    /// The client configuration, shared by every connection.
    pub(crate) config: Arc<ClientConfig>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub(crate) name: ServerName<'static>,
}

impl Trust {
    /// Trusts the CA certificates of the PEM file `ca` (`--ca`), or the system's roots if
    /// `None`, for a server named `host` (a DNS name or an IP address, without port).
    ///
    /// # Errors
    ///
    /// A one-line message: the CA file is unreadable or holds no usable certificate, the system
    /// has no roots, or `host` is not a valid server name.
    pub(crate) fn new(ca: Option<&Path>, host: &str) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in certificates("--ca", path)? {
                    roots.add(cert).map_err(|e| {
                        format!("--ca {}: not a usable CA certificate: {e}", path.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "no CA certificates found on this system: pass --ca FILE to trust the \
                         server's CA"
                            .into(),
                    );
                }
            }
        }
        Trust::with_roots(roots, host)
    }

    /// Trusts `roots` for a server named `host`.
    pub(crate) fn with_roots(roots: RootCertStore, host: &str) -> Result<Trust, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} is not a name a TLS certificate can carry: {e}"))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Trust {
            config: Arc::new(config),
            name,
        })
    }
}

/// A certificate for 127.0.0.1 and localhost, signed by a CA made with it, for the servers
/// `bench --tls` starts: the server reads the leaf and its key from files (removed on drop),
/// the bench's clients trust the CA.
#[derive(Debug)]
pub(crate) struct Generated {
    /// The folder of the two files, private to this user.
    dir: PathBuf,
    /// The leaf certificate, PEM.
    pub(crate) cert: PathBuf,
    /// Its private key, PEM (PKCS#8).
    pub(crate) key: PathBuf,
    /// The CA's certificate.
    ca: CertificateDer<'static>,
}

impl Generated {
    /// Makes the CA and the leaf (ECDSA P-256) and writes the leaf's files to a new folder of
    /// the temporary directory.
    ///
    /// # Errors
    ///
    /// A one-line message if the certificates cannot be made or the files written.
    pub(crate) fn new() -> Result<Generated, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let failed = |e: rcgen::Error| format!("cannot make a TLS certificate: {e}");
        let mut ca_params = CertificateParams::new(Vec::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shardcast bench CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(failed)?;
        let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).map_err(failed)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "shardcast bench");
        let leaf_key = KeyPair::generate().map_err(failed)?;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(failed)?;

        let dir = std::env::temp_dir().join(format!("shardcast-bench-tls-{}", std::process::id()));
        // A folder left by an earlier process with our id is stale.
        let _ = std::fs::remove_dir_all(&dir);
        let written = |path: &Path| {
            let path = path.display().to_string();
            move |e: std::io::Error| format!("cannot write {path}: {e}")
        };
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(written(&dir))?;
        // Removes the folder if a file cannot be written.
        let generated = Generated {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: ca.der().clone(),
            dir,
        };
        std::fs::write(&generated.cert, leaf.pem()).map_err(written(&generated.cert))?;
        std::fs::write(&generated.key, leaf_key.serialize_pem())
            .map_err(written(&generated.key))?;
        Ok(generated)
    }

    /// Trusts this CA (and nothing else) for a server at `host`.
    pub(crate) fn trust(&self, host: &str) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| format!("the generated CA is not usable: {e}"))?;
        Trust::with_roots(roots, host)
    }
}

impl Drop for Generated {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

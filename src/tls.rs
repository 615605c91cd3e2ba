//! HTTPS and WSS on livebase's own listener (`--tls-cert`/`--tls-key`), with rustls.
//!
//! The certificate chain and key are read once at start-up; a bad file stops the start
//! with a message naming it. Handshakes run in their own tasks (`conn` spawns them)
//! with a time limit and a cap on how many are in progress, so a client that opens a
//! connection and stalls (or a flood of them) cannot hold up anyone else's: only
//! finished handshakes reach the HTTP server. ALPN offers HTTP/1.1 only — Socket.IO's WebSocket upgrade needs it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const HANDSHAKES_IN_FLIGHT: usize = 256;

/// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1
/// or SEC1) into a server configuration.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: holds no PEM certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| {
        anyhow::anyhow!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} and {} do not make a usable certificate and key: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Finishes the TLS handshake of an accepted connection within the time limit; `None`
/// (logged) when it fails or stalls. The caller caps how many run at once.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    addr: SocketAddr,
) -> Option<TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%addr, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, "TLS handshake timed out");
            None
        }
    }
}

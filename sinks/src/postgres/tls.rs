//! TLS for the PostgreSQL connection: rustls (pure Rust, so the binary and the slim runtime
//! image need no system OpenSSL), verifying the server against the configured CA file or the
//! Mozilla roots. Whether TLS is used at all is the connection's `sslmode`.

use std::path::Path;
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{PostgresSinkError, Result};

/// Builds the connector: the certificates of `ca_file` when given, else the Mozilla roots.
pub(crate) fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_error = |detail: String| PostgresSinkError::CaFile {
                path: path.display().to_string(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
            let mut added = 0;
            for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
                let certificate = certificate.map_err(|error| ca_error(error.to_string()))?;
                roots
                    .add(certificate)
                    .map_err(|error| ca_error(error.to_string()))?;
                added += 1;
            }
            if added == 0 {
                return Err(ca_error("no PEM certificate in it".to_owned()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // The provider is named, not taken from the process default, so that another crate
    // enabling a second provider cannot make this panic. `ring` rather than `aws-lc-rs`: it
    // builds with a C compiler alone (no cmake), like the rest of the tree; the post-quantum
    // key exchange it lacks is not what a database connection inside one site needs.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| PostgresSinkError::InvalidConfig(format!("tls: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

//! One HTTP/1.1 exchange per request, over plain TCP (`http://`) or TLS (`https://`: rustls
//! with the Mozilla roots of `webpki-roots`, the provider and versions the PostgreSQL sink uses).
//!
//! A connection per request rather than a pool: at most 20 requests a minute go out, so a
//! pool would save a handshake every few seconds at the cost of its code.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::ApiError;

/// The largest response body read (a full page of 10 000 records is ~30 MB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Where requests go.
pub struct Transport {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Transport {
    /// Returns the transport of an `http://` or `https://` base URL.
    pub fn new(base_url: &http::Uri) -> Result<Transport, String> {
        let host = base_url.host().ok_or("no host")?.to_owned();
        let https = base_url.scheme_str() == Some("https");
        let port = base_url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match https {
            false => None,
            true => {
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|error| format!("`{host}` is not a TLS server name: {error}"))?;
                Some((TlsConnector::from(Arc::new(tls_config()?)), name))
            }
        };
        Ok(Transport { host, port, tls })
    }

    /// Returns the `Host` header value.
    pub fn host_header(&self) -> String {
        match self.port {
            80 | 443 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        }
    }

    /// Sends one request (origin-form URI, `Host` set) and reads the whole response.
    pub async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, self.port))
            .await
            .map_err(|error| ApiError::Unreachable(format!("connecting: {error}")))?;
        match &self.tls {
            None => exchange_over(tcp, request).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|error| ApiError::Unreachable(format!("TLS handshake: {error}")))?;
                exchange_over(tls, request).await
            }
        }
    }
}

/// rustls with the ring provider, its safe default versions and the webpki roots.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Named, not the process default, so another crate enabling a second provider cannot make
    // this panic. `ring` (deprecated for lacking post-quantum key exchange) as in the
    // PostgreSQL sink: it builds with a C compiler alone, no cmake.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn exchange_over<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), ApiError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |what: &str, error: hyper::Error| {
        ApiError::Unreachable(format!("{what}: {}", error_chain(&error)))
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|error| unreachable("HTTP handshake", error))?;
    // The connection is driven by its own task until the response is read; it ends with it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| unreachable("sending the request", error))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|error| ApiError::Unreachable(format!("reading the body: {error}")))?
        .to_bytes();
    Ok((status, body))
}

/// Returns an error with its sources, `a: b: c` (hyper's top-level message alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ports_and_host_headers() {
        let plain = Transport::new(&"http://v7openapi.7moor.com".parse().unwrap()).unwrap();
        assert_eq!(
            (plain.port, plain.host_header().as_str()),
            (80, "v7openapi.7moor.com")
        );
        assert!(plain.tls.is_none());
        let tls = Transport::new(&"https://v7openapi.7moor.com".parse().unwrap()).unwrap();
        assert_eq!(tls.port, 443);
        assert!(tls.tls.is_some());
        let local = Transport::new(&"http://127.0.0.1:8081".parse().unwrap()).unwrap();
        assert_eq!(local.host_header(), "127.0.0.1:8081");
    }
}

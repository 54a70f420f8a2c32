//! The HTTP/1.1 client side of one load connection: hyper's `client::conn::http1` over a
//! tokio `TcpStream`, one TCP connection at a time, so the number of connections is exact.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{LoadError, Push};

/// Where pushes go: an `http://host:port[/prefix]` base.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    host_header: HeaderValue,
    path_prefix: String,
}

impl Target {
    /// Parses a base URL and resolves its host (once, so no push waits on DNS).
    pub async fn resolve(url: &str) -> Result<Target, LoadError> {
        let invalid = |reason: &str| LoadError::Target {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let mut addrs = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|error| invalid(&format!("cannot resolve: {error}")))?;
        let addr = addrs.next().ok_or_else(|| invalid("resolves to nothing"))?;
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("host is not a valid header"))?;
        Ok(Target {
            addr,
            host_header,
            path_prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Returns a target for an address (tests and benchmarks).
    pub fn from_addr(addr: SocketAddr) -> Target {
        Target {
            addr,
            host_header: HeaderValue::from_str(&addr.to_string())
                .expect("a socket address is a valid header value"),
            path_prefix: String::new(),
        }
    }

    /// Returns the request target of a source's hook: `<prefix>/hooks/<source>[?query]`.
    pub fn hook_path(&self, source: &str, query: Option<&str>) -> String {
        match query {
            Some(query) => format!("{}/hooks/{source}?{query}", self.path_prefix),
            None => format!("{}/hooks/{source}", self.path_prefix),
        }
    }

    /// Returns the resolved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Why one push was not acknowledged (its class is the report's failure key).
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `200` with the body `200`.
    Acknowledged,
    /// Any other answer, or no answer.
    Failed(&'static str, Option<StatusCode>),
}

impl Outcome {
    pub(crate) fn class(&self) -> String {
        match self {
            Outcome::Acknowledged => "acknowledged".to_owned(),
            Outcome::Failed(_, Some(status)) => format!("status_{}", status.as_u16()),
            Outcome::Failed(class, None) => (*class).to_owned(),
        }
    }
}

/// One client connection: reused across pushes (keep-alive) or opened per push.
pub(crate) struct Connection {
    target: Target,
    keep_alive: bool,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Connection {
    pub(crate) fn new(target: Target, keep_alive: bool, timeout: Duration) -> Connection {
        Connection {
            target,
            keep_alive,
            sender: None,
            timeout,
        }
    }

    /// Sends one push and reads the whole answer. Returns the outcome and whether a TCP
    /// connection was opened for it. The timeout covers connect, request and response.
    pub(crate) async fn send(&mut self, push: &Push) -> (Outcome, u32) {
        let mut opened = 0;
        let attempt = tokio::time::timeout(self.timeout, self.exchange(push, &mut opened)).await;
        let outcome = match attempt {
            Ok(outcome) => outcome,
            Err(_) => {
                self.sender = None;
                Outcome::Failed("timeout", None)
            }
        };
        if !self.keep_alive {
            self.sender = None;
        }
        (outcome, opened)
    }

    async fn exchange(&mut self, push: &Push, opened: &mut u32) -> Outcome {
        // A request hyper hands back unsent (the connection closed while idle) is retried once
        // on a fresh connection; one that was sent is never re-sent here.
        let mut request = self.request(push);
        for _ in 0..2 {
            let sender = match self.ready_sender(opened).await {
                Ok(sender) => sender,
                Err(outcome) => return outcome,
            };
            match sender.try_send_request(request).await {
                Ok(response) => return self.read(response).await,
                Err(mut error) => {
                    self.sender = None;
                    match error.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Outcome::Failed("io", None),
                    }
                }
            }
        }
        Outcome::Failed("io", None)
    }

    async fn ready_sender(
        &mut self,
        opened: &mut u32,
    ) -> Result<&mut SendRequest<Full<Bytes>>, Outcome> {
        if let Some(sender) = self.sender.as_mut() {
            if sender.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            self.sender = Some(self.connect().await?);
            *opened += 1;
        }
        self.sender.as_mut().ok_or(Outcome::Failed("connect", None))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Outcome> {
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|_| Outcome::Failed("connect", None))?;
        // Pushes are small request/response pairs: Nagle would only add delay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Outcome::Failed("connect", None))?;
        tokio::spawn(async move {
            // Ends when the connection closes; its error (if any) shows up on the next send.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn request(&self, push: &Push) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(push.body.clone()));
        *request.method_mut() = push.method.clone();
        *request.uri_mut() = push.path_and_query.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.target.host_header.clone());
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("callhook-simulate/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(content_type) = &push.content_type {
            headers.insert(CONTENT_TYPE, content_type.clone());
        }
        if !self.keep_alive {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        request
    }

    async fn read(&mut self, response: http::Response<hyper::body::Incoming>) -> Outcome {
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                self.sender = None;
                return Outcome::Failed("io", None);
            }
        };
        if status != StatusCode::OK {
            return Outcome::Failed("status", Some(status));
        }
        if body.as_ref() != b"200" {
            return Outcome::Failed("unexpected_body", None);
        }
        Outcome::Acknowledged
    }
}

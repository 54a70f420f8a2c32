//! The receiver answering arbitrary bytes on one HTTP/1 connection, through hyper, with an
//! in-memory raw log; every record it stores then goes through the normalizer.
//!
//! Layout of an input: the first byte sets the raw log to refuse appends (bit 0) and the peer
//! address (bit 1: `10.1.2.3`, else `127.0.0.1`); the rest is what the client sends, and the
//! client then stays connected (a closed read half would cut hyper short). The runtime's clock
//! is paused, so when nothing else can happen the header or body read timeout fires at once
//! and the connection ends; a connection still open after an hour of that clock is a failure.
//!
//! Invariants: no response is a 5xx but a 503 when the log refuses appends; the
//! number of `200`s equals the number of records stored (acks only after the append, and
//! every successful append acked); each record comes from a configured source within its body
//! limit and satisfies [`crate::push::check_mapped`] on its source's dialect.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callhook_ingest::{IngestConfig, Receiver, SourceAuthConfig, SourceSettings};
use callhook_normalizer::{Dialect, RawPush, SourceContext};
use callhook_rawlog::{AppendError, BoxFuture, LogAppender, Position, RawRecord};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The body limit of the `coocenter` source, small so that inputs reach `413` both by
/// `Content-Length` and while streaming a chunked body.
const SMALL_BODY_LIMIT: u64 = 256;

/// An in-memory raw log that keeps the records of one input, or refuses every append.
#[derive(Default)]
struct FuzzLog {
    refuse: AtomicBool,
    records: Mutex<Vec<RawRecord>>,
}

impl LogAppender for FuzzLog {
    fn append(
        &self,
        _key: String,
        record: RawRecord,
    ) -> BoxFuture<'static, Result<Position, AppendError>> {
        let result = if self.refuse.load(Ordering::Relaxed) {
            Err(AppendError::Overloaded("fuzz log refuses"))
        } else {
            let mut records = self.records.lock().expect("log lock");
            records.push(record);
            Ok(Position {
                partition: 0,
                offset: records.len() as u64,
            })
        };
        Box::pin(async move { result })
    }

    fn check_writable(&self) -> Result<(), String> {
        Ok(())
    }
}

/// One configured source: its name, dialect, body limit and auth table.
struct SourceSpec {
    name: &'static str,
    dialect: Dialect,
    max_body_bytes: Option<u64>,
    auth: serde_json::Value,
}

fn source_specs() -> Vec<SourceSpec> {
    let open = json!({});
    vec![
        SourceSpec {
            name: "7moor",
            dialect: Dialect::SevenMoor,
            max_body_bytes: None,
            auth: open.clone(),
        },
        SourceSpec {
            name: "coocenter",
            dialect: Dialect::CooCenter,
            max_body_bytes: Some(SMALL_BODY_LIMIT),
            auth: open,
        },
        SourceSpec {
            name: "uincall",
            dialect: Dialect::UinCall,
            max_body_bytes: None,
            auth: json!({"token": "fuzz-token-0123456789"}),
        },
        SourceSpec {
            name: "signed",
            dialect: Dialect::UinCall,
            max_body_bytes: None,
            auth: json!({"hmac": {"secret": "fuzz-secret-0123456789", "prefix": "sha256="}}),
        },
        SourceSpec {
            name: "sw",
            dialect: Dialect::SevenMoor,
            max_body_bytes: None,
            // base64 of `fuzz-signing-key-0123456789`
            auth: json!({"standard_webhooks": {"secrets": ["whsec_ZnV6ei1zaWduaW5nLWtleS0wMTIzNDU2Nzg5"]}}),
        },
        SourceSpec {
            name: "cc",
            dialect: Dialect::CooCenter,
            max_body_bytes: None,
            auth: json!({"coocenter_webkey": {"webkey": "zycoo-webkey-0123456789"}}),
        },
        SourceSpec {
            name: "ips",
            dialect: Dialect::CooCenter,
            max_body_bytes: None,
            auth: json!({"ip_allowlist": ["10.0.0.0/8"], "trusted_proxies": ["127.0.0.0/8"]}),
        },
    ]
}

/// What one input runs against, built once per thread (AFL's persistent mode reuses it).
struct Harness {
    runtime: Runtime,
    receiver: Arc<Receiver>,
    log: Arc<FuzzLog>,
    /// Source name -> (mapping context, body limit).
    sources: BTreeMap<String, (SourceContext, u64)>,
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime");
        let config = IngestConfig::default();
        let settings = config.validate().expect("default ingest config");
        let mut settings_by_name = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for spec in source_specs() {
            let auth: SourceAuthConfig =
                serde_json::from_value(spec.auth).expect("a valid auth table");
            let auth = auth.validate().expect("a valid auth config");
            let source_settings =
                SourceSettings::new(auth, spec.max_body_bytes).expect("valid source settings");
            settings_by_name.insert(spec.name.to_owned(), source_settings);
            let mut ctx = SourceContext::new(spec.name, spec.dialect);
            ctx.redact_params = vec!["token".to_owned()];
            let limit = spec.max_body_bytes.unwrap_or(config.max_body_bytes);
            sources.insert(spec.name.to_owned(), (ctx, limit));
        }
        let log = Arc::new(FuzzLog::default());
        let appender: Arc<dyn LogAppender> = log.clone();
        let receiver =
            Receiver::new(settings, settings_by_name, appender).expect("a valid receiver");
        Harness {
            runtime,
            receiver: Arc::new(receiver),
            log,
            sources,
        }
    }

    /// Runs one input, checks it, and returns the statuses answered.
    fn run(&self, flags: u8, input: &[u8]) -> Vec<u16> {
        let refuse = flags & 1 != 0;
        self.log.refuse.store(refuse, Ordering::Relaxed);
        self.log.records.lock().expect("log lock").clear();
        let peer_ip = if flags & 2 != 0 {
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let output = self.runtime.block_on(exchange(
            Arc::clone(&self.receiver),
            SocketAddr::new(peer_ip, 40_000),
            input,
        ));
        let statuses = statuses(&output);
        let records = std::mem::take(&mut *self.log.records.lock().expect("log lock"));
        for &status in &statuses {
            assert!(
                status < 500 || (status == 503 && refuse),
                "status {status} (log refusing: {refuse})"
            );
        }
        let acked = statuses.iter().filter(|&&status| status == 200).count();
        assert_eq!(acked, records.len(), "200s and stored records differ");
        for record in &records {
            let (ctx, limit) = self
                .sources
                .get(&record.source)
                .unwrap_or_else(|| panic!("record of unknown source {:?}", record.source));
            assert!(record.body.len() as u64 <= *limit, "body over its limit");
            let push = RawPush {
                method: &record.method,
                content_type: record.content_type.as_deref(),
                query: record.query.as_deref(),
                headers: &record.headers,
                body: &record.body,
                received_at: record.received_at,
            };
            crate::push::check_mapped(&push, ctx);
        }
        statuses
    }
}

/// Sends `input` on a fresh connection, keeps it open, and returns all the server wrote
/// before it closed.
async fn exchange(receiver: Arc<Receiver>, peer: SocketAddr, input: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let connection = tokio::spawn(callhook_ingest::serve_io(receiver, server, peer));
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let send = async {
        // The server may close first (a parse error, `Connection: close`): not a failure.
        let _ = to_server.write_all(input).await;
        to_server
    };
    let receive = async {
        let mut output = Vec::new();
        let _ = from_server.read_to_end(&mut output).await;
        output
    };
    let exchanged = tokio::time::timeout(Duration::from_secs(3600), async {
        tokio::join!(send, receive)
    })
    .await;
    let (_to_server, output) = exchanged.expect("the connection neither closed nor timed out");
    // A connection error (bad request line, reset) is an answer like any other.
    let _ = connection.await.expect("the connection task panicked");
    output
}

/// Returns the status of every response in `output` (status lines start with `HTTP/1.`; no
/// response body the receiver writes contains that text).
fn statuses(output: &[u8]) -> Vec<u16> {
    const MARK: &[u8] = b"HTTP/1.";
    let mut statuses = Vec::new();
    let mut rest = output;
    while let Some(at) = rest.windows(MARK.len()).position(|window| window == MARK) {
        let line = &rest[at..];
        let code = line
            .get(9..12)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", String::from_utf8_lossy(line)));
        statuses.push(code);
        rest = &line[MARK.len()..];
    }
    statuses
}

thread_local! {
    static HARNESS: Harness = Harness::new();
}

/// Sends one fuzzed input to the receiver and checks the answers and the records.
pub fn check_ingest(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    HARNESS.with(|harness| harness.run(flags, input));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(flags: u8, input: &[u8]) -> Vec<u16> {
        HARNESS.with(|harness| harness.run(flags, input))
    }

    fn post(path: &str, body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    #[test]
    fn test_harness_sees_every_answer_of_a_connection() {
        let push = post("/hooks/7moor", br#"{"pushType":"login","agentNumber":"1"}"#);
        assert_eq!(answers(0, &push), [200]);
        assert_eq!(answers(1, &push), [503]);
        assert_eq!(
            answers(0, &[push.clone(), push.clone()].concat()),
            [200, 200]
        );
        let too_large = post("/hooks/coocenter", &[b' '; SMALL_BODY_LIMIT as usize + 1]);
        assert_eq!(answers(0, &too_large), [413]);
        let truncated = &push[..push.len() - 5];
        assert_eq!(answers(0, truncated), [408]);
        assert_eq!(
            answers(0, b"PUT /hooks/7moor HTTP/1.1\r\nHost: h\r\n\r\n"),
            [405]
        );
        assert_eq!(answers(0, &post("/hooks/uincall", b"{}")), [401]);
        assert_eq!(answers(0, b"hello\r\n\r\n"), [400]);
        assert_eq!(answers(0, b""), Vec::<u16>::new());
    }
}

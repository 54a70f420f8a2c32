//! A fake of the 7moor v7 CDR query API (`POST /openapi/v1/call/cdr/list`, seed 001 §2.13),
//! a real hyper server on a loopback port, for the reconciliation tests.
//!
//! It checks what the real API documents: `m7-appkey` is the account, `m7-timestamp` is 10-digit
//! epoch seconds within 5 minutes of now, `m7-nonce` is 6 digits and not reused, `m7-sign` is
//! `Base64(HMAC-SHA256(secret, appkey + timestamp + nonce))` (else code 50015), the query spans
//! at most 7 days and `pageSize` at most 10 000 (else code 40000), at most 20 requests in any
//! minute (else code 50010). It answers the documented envelope, filtering its records by
//! their `startTime` (local time, like the query) and paging them by `page`/`pageSize`.
//! [`Fake7moor::set_down`] makes it answer HTTP 503 to everything.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use chrono::NaiveDateTime;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The `code` answered (`"200"`, `"50015"`, ...), or the HTTP status when down.
    pub code: String,
    /// The body's `startTime`, `endTime`, `page`, `pageSize`.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    appkey: String,
    secret: String,
    records: Vec<Map<String, Value>>,
    down: bool,
    limit_next: u32,
    nonces: HashSet<String>,
    seen: Vec<SeenRequest>,
}

/// The running fake; stops when dropped.
pub struct Fake7moor {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake7moor {
    /// Starts the fake for one account on `127.0.0.1:0`.
    pub fn start(appkey: &str, secret: &str) -> Fake7moor {
        let state = Arc::new(Mutex::new(State {
            appkey: appkey.to_owned(),
            secret: secret.to_owned(),
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(serve(listener, shared, stopped));
        });
        Fake7moor {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Returns `http://127.0.0.1:<port>`, the `base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the account the fake serves.
    pub fn appkey(&self) -> String {
        self.lock().appkey.clone()
    }

    /// Adds records (the §2.13 record shape) the API returns.
    pub fn add_records(&self, records: impl IntoIterator<Item = Value>) {
        let mut state = self.lock();
        for record in records {
            if let Value::Object(record) = record {
                state.records.push(record);
            }
        }
    }

    /// Makes the fake answer HTTP 503 to everything (`true`) or work again (`false`).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Makes the fake answer the next `count` well-signed requests with code 50010 (over the
    /// account's rate limit), as if another client of the account used it up.
    pub fn limit_next(&self, count: u32) {
        self.lock().limit_next = count;
    }

    /// Returns the requests answered so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Drop for Fake7moor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Returns a record of the §2.13 shape for one call (an answered outbound call; `_id` is the
/// call id, as in the seed's example, with `callUniqueId` and `eventUniqueId` as its table lists).
pub fn cdr_record(call_id: &str, start_time: &str) -> Value {
    json!({
        "billCalls": [],
        "recordingDuration": 7,
        "failureReason": 0,
        "hangUpSide": "AGENT",
        "cdrType": "callRecord",
        "recordType": "normal",
        "recordFileUrl": format!("https://recordings.example/{call_id}.mp3"),
        "keys": [],
        "waitDuration": 0,
        "bridgeDuration": 7,
        "totalDuration": 23,
        "customerRingDuration": 8,
        "agentRingDuration": 8,
        "agentName": "婷",
        "agentNumber": "1121",
        "status": "ANSWER",
        "displayNumber": "02258834811",
        "_id": call_id,
        "callUniqueId": call_id,
        "eventUniqueId": format!("e{call_id}"),
        "accountId": "2000144",
        "agentAnswerTime": start_time,
        "callType": "dialout",
        "customerNumber": "17319132391",
        "startTime": start_time,
        "endTime": start_time,
        "hangupTime": start_time,
        "__v": 0
    })
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(request, &state).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut state = state.lock().unwrap_or_else(|poison| poison.into_inner());
    let query: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let now = Instant::now();
    if state.down {
        state.seen.push(SeenRequest {
            code: "503".into(),
            body: query,
            at: now,
        });
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            Value::String("down".into()),
        );
    }
    if parts.uri.path() != "/openapi/v1/call/cdr/list" || parts.method != hyper::Method::POST {
        return envelope_error("50001", "route not found");
    }
    let code = check_headers(&state, &header) // the documented header checks, in order
        .or_else(|| {
            let recent = state
                .seen
                .iter()
                .filter(|seen| now.duration_since(seen.at) < Duration::from_secs(60))
                .count();
            (recent >= 20 || state.limit_next > 0).then_some(("50010", "limit error"))
        })
        .or_else(|| check_query(&query));
    if code.is_some_and(|(code, _)| code == "50010") {
        state.limit_next = state.limit_next.saturating_sub(1);
    }
    let nonce = header("m7-nonce");
    state.nonces.insert(nonce);
    let code_text = code.map(|(code, _)| code).unwrap_or("200").to_owned();
    state.seen.push(SeenRequest {
        code: code_text,
        body: query.clone(),
        at: now,
    });
    if let Some((code, message)) = code {
        return envelope_error(code, message);
    }
    let page = records_page(&state.records, &query);
    response(StatusCode::OK, page)
}

fn check_headers(
    state: &State,
    header: &dyn Fn(&str) -> String,
) -> Option<(&'static str, &'static str)> {
    let appkey = header("m7-appkey");
    let timestamp = header("m7-timestamp");
    let nonce = header("m7-nonce");
    let sign = header("m7-sign");
    if appkey != state.appkey {
        return Some(("50012", "headers appkey error"));
    }
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return Some(("50013", "headers timestamp error"));
    };
    if timestamp.len() != 10 {
        return Some(("50019", "timestamp timeout"));
    }
    if (chrono::Utc::now().timestamp() - seconds).abs() > 300 {
        return Some(("50014", "headers timestamp overtime"));
    }
    if nonce.len() != 6 || !nonce.bytes().all(|b| b.is_ascii_digit()) {
        return Some(("50016", "headers nonce error"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(state.secret.as_bytes()).expect("any key");
    mac.update(format!("{appkey}{timestamp}{nonce}").as_bytes());
    if BASE64.encode(mac.finalize().into_bytes()) != sign {
        return Some(("50015", "headers sign error"));
    }
    if state.nonces.contains(&nonce) {
        return Some(("50015", "headers sign error"));
    }
    None
}

fn check_query(query: &Value) -> Option<(&'static str, &'static str)> {
    let (Some(start), Some(end)) = (
        local_time(&query["startTime"]),
        local_time(&query["endTime"]),
    ) else {
        return Some(("6734", "startTime or endTime format error"));
    };
    if end - start > chrono::TimeDelta::days(7) || end < start {
        return Some(("40000", "param error"));
    }
    let page_size = query["pageSize"].as_u64().unwrap_or(10_000);
    if page_size == 0 || page_size > 10_000 || query["page"].as_u64() == Some(0) {
        return Some(("40000", "param error"));
    }
    None
}

fn records_page(records: &[Map<String, Value>], query: &Value) -> Value {
    let start = local_time(&query["startTime"]);
    let end = local_time(&query["endTime"]);
    let matching: Vec<&Map<String, Value>> = records
        .iter()
        .filter(|record| {
            let at = record.get("startTime").and_then(local_time);
            at.is_some() && at >= start && at <= end
        })
        .collect();
    let page = query["page"].as_u64().unwrap_or(1).max(1) as usize;
    let size = query["pageSize"].as_u64().unwrap_or(10_000) as usize;
    let list: Vec<Value> = matching
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|record| Value::Object((*record).clone()))
        .collect();
    json!({
        "success": true,
        "code": "200",
        "message": "requestSuccess",
        "data": {"list": list, "count": matching.len()}
    })
}

fn local_time(value: &Value) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(value.as_str()?, "%Y-%m-%d %H:%M:%S").ok()
}

fn envelope_error(code: &str, message: &str) -> Response<Full<Bytes>> {
    response(
        StatusCode::OK,
        json!({"success": false, "code": code, "message": message}),
    )
}

fn response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

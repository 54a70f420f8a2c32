//! The console over real HTTP against the real binary: sign-in, the session cookie and bearer
//! access, CSRF refusals, vendor strings rendered as text, the Live API, the event stream, and
//! a dead letter shown and redriven. (The browser test drives the same pages in Chromium.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

const TOKEN: &str = "console-token-0123456789";
const XSS: &str = "<script>alert(1)</script>";

fn config() -> String {
    format!("[console]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
}

/// A response: status, lower-cased head, body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().to_owned())
        })
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: dechunk(head, body),
    }
}

fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

fn form_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in page"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ring(call: &str, agent_name: &str) -> String {
    serde_json::json!({
        "eventUniqueId": format!("{call}-ring"), "accountId": "20000153", "callUniqueId": call,
        "pushType": "dialoutRing", "customerNumber": "17319132391", "displayNumber": "01081400192",
        "statusTime": chrono_now(), "callEvent": "ring", "callType": "dialout",
        "agentNumber": "20001", "agentName": agent_name, "extras": ""
    })
    .to_string()
}

fn chrono_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

#[test]
fn test_console_auth_csrf_escaping_live_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(&config()));
    let console = server.console.expect("the console listens");

    // Everything needs a session or the bearer token.
    let anonymous = request(console, "GET", "/", &[], "");
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location").as_deref(), Some("/login"));
    assert_eq!(request(console, "GET", "/api/live", &[], "").status, 401);
    assert_eq!(request(console, "GET", "/events", &[], "").status, 401);
    assert_eq!(
        request(console, "POST", "/login", &[], "token=wrong-token-000000").status,
        401
    );
    let signed_in = request(console, "POST", "/login", &[], &format!("token={TOKEN}"));
    assert_eq!(signed_in.status, 303);
    let set_cookie = signed_in.header("set-cookie").expect("a session cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = [("Cookie", cookie.as_str())];
    let live = request(console, "GET", "/", &with_cookie, "");
    assert_eq!(live.status, 200);
    let csp = live.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        request(
            console,
            "GET",
            "/api/live",
            &[("Authorization", &bearer)],
            ""
        )
        .status,
        200
    );

    // An agent name carrying a script is stored as sent and shown as text.
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        ring("xss-call", XSS).as_bytes(),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    let calls = request(console, "GET", "/calls", &with_cookie, "");
    assert_eq!(calls.status, 200);
    assert!(
        calls.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        calls.body
    );
    assert!(!calls.body.contains(XSS));
    let call = request(
        console,
        "GET",
        "/call?source=7moor&id=xss-call",
        &with_cookie,
        "",
    );
    assert!(call.body.contains("call.ringing"), "{}", call.body);
    assert!(!call.body.contains(XSS));
    let agents = request(console, "GET", "/agents", &with_cookie, "");
    assert!(!agents.body.contains(XSS));

    // The Live API has the ringing call (the page's script writes it with textContent).
    let live: Value =
        serde_json::from_str(&request(console, "GET", "/api/live", &with_cookie, "").body).unwrap();
    let in_progress = live["calls"]["in_progress"].as_array().unwrap();
    let ringing = in_progress
        .iter()
        .find(|c| c["call_id"] == "xss-call")
        .expect("live call");
    assert_eq!(ringing["state"], "ringing");
    assert_eq!(ringing["agent_name"], XSS);

    // The event stream says `change` when the normalizer commits an event.
    let mut stream = TcpStream::connect(console).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {console}\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut events = BufReader::new(stream);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("retry:") {
        line.clear();
        events.read_line(&mut line).unwrap();
        assert!(Instant::now() < deadline);
    }
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        ring("sse-call", "agent").as_bytes(),
    );
    assert_eq!(status, 200);
    while !line.contains("event: change") {
        line.clear();
        events.read_line(&mut line).unwrap();
        assert!(Instant::now() < deadline, "no change event");
    }

    // A garbage push is dead-lettered; its page shows the raw push escaped.
    let garbage = "{\"eventUniqueId\":\"g1\",\"note\":\"<img src=x onerror=alert(2)>\"";
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        garbage.as_bytes(),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    let letters = request(console, "GET", "/dead-letters", &with_cookie, "");
    assert!(
        letters.body.contains("unparseable_body"),
        "{}",
        letters.body
    );
    let raw_ref = form_value(&letters.body, "raw_ref");
    let shown = request(
        console,
        "GET",
        &format!("/dead-letters?show={}", percent(&raw_ref)),
        &with_cookie,
        "",
    );
    assert!(
        shown.body.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains("<img src=x"));

    // Redrive refuses a missing CSRF token and a cross-origin post, then runs.
    let csrf = form_value(&letters.body, "csrf");
    let redrive = |headers: &[(&str, &str)], body: &str| {
        request(console, "POST", "/dead-letters/redrive", headers, body)
    };
    assert_eq!(
        redrive(&with_cookie, &format!("raw_ref={}", percent(&raw_ref))).status,
        403
    );
    let cross = [
        ("Cookie", cookie.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let body = format!("csrf={csrf}&raw_ref={}", percent(&raw_ref));
    assert_eq!(redrive(&cross, &body).status, 403);
    let done = redrive(&with_cookie, &body);
    assert_eq!(done.status, 303);
    let location = done.header("location").unwrap();
    assert!(
        location.starts_with("/dead-letters?message=Redriven"),
        "{location}"
    );

    // Signing out ends the session.
    let out = request(
        console,
        "POST",
        "/logout",
        &with_cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(out.status, 303);
    assert_eq!(request(console, "GET", "/", &with_cookie, "").status, 303);
    assert!(server.terminate().success());
}

#[test]
fn test_console_refuses_to_start_without_a_token_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[console]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("token"), "{stderr}");
}

//! The `callhook tap` command: attaches to `/tap` on a running process's admin listener and
//! prints one compact line per item (or the JSON lines with `--json`).
//!
//! It is a blocking HTTP/1.1 client over `std::net` (plain HTTP: the admin listener is
//! private), reading the chunked stream line by line. Vendor strings may hold terminal control
//! sequences: the compact form escapes every control character.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

/// `callhook tap` arguments.
#[derive(clap::Args)]
pub struct TapArgs {
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Only event types starting with this (`call.ended`, or `call.` for every call event).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only this call id (with `--raw`: pushes whose body or query contains it).
    #[arg(long)]
    call: Option<String>,
    /// The raw pushes as the receiver stored them, instead of the canonical events.
    #[arg(long)]
    raw: bool,
    /// JSON lines, one object per item, for scripts.
    #[arg(long)]
    json: bool,
    /// The admin listener, e.g. `http://127.0.0.1:9464`. Default: `admin_listen` of `--config`.
    #[arg(long)]
    admin: Option<String>,
    /// The tap token (`[admin] tap_token`). Default: `CALLHOOK_TAP_TOKEN`, then the config's.
    #[arg(long)]
    token: Option<String>,
    /// The config file of the running process (for its admin address and tap token).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs `callhook tap` until the stream ends (the process stops) or the user interrupts it.
pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Some(crate::config::Config::load(path)?),
        None => None,
    };
    let admin = match (&args.admin, &config) {
        (Some(admin), _) => admin.clone(),
        (None, Some(config)) => format!("http://{}", config.admin_listen),
        (None, None) => "http://127.0.0.1:9464".to_owned(),
    };
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("CALLHOOK_TAP_TOKEN").ok())
        .or_else(|| config.and_then(|config| config.admin.tap_token));
    let host = admin
        .strip_prefix("http://")
        .context("`--admin` must be an `http://host:port` URL")?
        .trim_end_matches('/');
    let path = format!("/tap?{}", query(&args));
    let mut lines = open_stream(host, &path, token.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            eprintln!("tap: the stream ended (the process stopped)");
            return Ok(());
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        let item: Value = serde_json::from_str(text).context("tap: a line is not JSON")?;
        match item["kind"].as_str() {
            Some("attached") => eprintln!("tap: attached to {admin} ({})", item["stream"]),
            Some("dropped") => eprintln!(
                "tap: {} items dropped (this terminal fell behind)",
                item["count"]
            ),
            _ if args.json => writeln!(out, "{text}")?,
            _ => writeln!(out, "{}", compact(&item))?,
        }
        out.flush()?;
    }
}

fn query(args: &TapArgs) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(source) = &args.source {
        pairs.push(("source", source));
    }
    if let Some(event_type) = &args.event_type {
        pairs.push(("type", event_type));
    }
    if let Some(call) = &args.call {
        pairs.push(("call", call));
    }
    if args.raw {
        pairs.push(("raw", "1"));
    }
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Sends the request and returns the body as a line reader (de-chunked).
fn open_stream(host: &str, path: &str, token: Option<&str>) -> anyhow::Result<Box<dyn BufRead>> {
    let mut stream =
        TcpStream::connect(host).with_context(|| format!("cannot connect to {host}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    match status {
        "200" => {}
        "401" => bail!("the admin listener refused the tap token (`--token`, `[admin] tap_token`)"),
        "404" => bail!("this process serves no tap (`[admin] tap_token` is needed when the admin listener is not on loopback)"),
        other => bail!("the admin listener answered {other}"),
    }
    Ok(match chunked {
        true => Box::new(BufReader::new(Chunked {
            inner: reader,
            left: 0,
            done: false,
        })),
        false => Box::new(reader),
    })
}

/// A reader of an HTTP/1.1 chunked body.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size_line = String::new();
            // The CRLF after the previous chunk's data comes first (empty line), then the size.
            while size_line.trim().is_empty() {
                size_line.clear();
                if self.inner.read_line(&mut size_line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = size_line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let wanted = buf.len().min(self.left);
        let read = self.inner.read(&mut buf[..wanted])?;
        self.left -= read;
        Ok(read)
    }
}

/// Returns the one-line form of an item, with control characters escaped.
pub fn compact(item: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
    let line = match item["kind"].as_str() {
        Some("event") => {
            let event = &item["event"];
            let data = &event["data"];
            let mut line = format!(
                "{} {} {} call={}",
                text(&event["time"]),
                text(&item["source"]),
                text(&event["type"]),
                text(&data["call_id"]),
            );
            let number = |value: &Value| text(&value["raw"]);
            if data["caller"].is_object() || data["callee"].is_object() {
                line.push_str(&format!(
                    " {}->{}",
                    number(&data["caller"]),
                    number(&data["callee"])
                ));
            }
            if let Some(agent) = data["agent"].as_object() {
                let field = |name: &str| agent.get(name).and_then(Value::as_str).unwrap_or("");
                line.push_str(&format!(" agent={} {}", field("number"), field("name")));
            }
            for field in ["agent_status", "disposition"] {
                if let Some(value) = data[field].as_str() {
                    line.push_str(&format!(" {field}={value}"));
                }
            }
            line
        }
        Some("raw") => {
            let body = text(&item["body"]);
            let preview: String = body.chars().take(160).collect();
            format!(
                "{} {} {} {} {}B {}",
                text(&item["received_at"]),
                text(&item["source"]),
                text(&item["method"]),
                text(&item["position"]),
                body.len(),
                preview
            )
        }
        Some("dead_letter") => format!(
            "{} {} DEAD LETTER {} {}: {}",
            text(&item["received_at"]),
            text(&item["source"]),
            text(&item["raw_ref"]),
            text(&item["reason"]),
            text(&item["detail"]),
        ),
        _ => item.to_string(),
    };
    escape_controls(&line)
}

fn escape_controls(line: &str) -> String {
    line.chars()
        .flat_map(|character| match character.is_control() {
            true => character.escape_default().collect::<Vec<_>>(),
            false => vec![character],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_compact_event_and_escapes() {
        let item = serde_json::json!({
            "kind": "event", "source": "7moor",
            "event": {"time": "2026-12-05T14:00:00Z", "type": "call.ringing",
                "data": {"call_id": "c1", "caller": {"raw": "1731"}, "callee": {"raw": "8001"},
                    "agent": {"number": "8001", "name": "\u{1b}[31mred"}}}
        });
        assert_eq!(
            compact(&item),
            "2026-12-05T14:00:00Z 7moor call.ringing call=c1 1731->8001 agent=8001 \\u{1b}[31mred"
        );
    }

    #[test]
    fn test_chunked_reader() {
        let body = b"5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n";
        let mut reader = Chunked {
            inner: BufReader::new(&body[..]),
            left: 0,
            done: false,
        };
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world\n");
    }

    #[test]
    fn test_query_is_encoded() {
        let args = TapArgs {
            source: Some("7moor".into()),
            event_type: None,
            call: Some("a b&c".into()),
            raw: true,
            json: false,
            admin: None,
            token: None,
            config: None,
        };
        assert_eq!(query(&args), "source=7moor&call=a%20b%26c&raw=1");
    }
}

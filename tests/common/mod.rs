//! Shared helpers of the end-to-end tests: start the real `callhook` binary on port 0, speak
//! HTTP/1.1 to it over loopback, read its SQLite files.

#![allow(dead_code)]

pub mod kafka;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `callhook serve` process.
pub struct Server {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The console's address, when the config enables it.
    pub console: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `callhook serve` on ephemeral ports with `data_dir` and optional config text.
    pub fn start(data_dir: &Path, config: Option<&str>) -> Server {
        Self::start_with_env(data_dir, config, &[])
    }

    /// Like [`Server::start`], with extra environment variables (e.g. `FAILPOINTS`).
    pub fn start_with_env(data_dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Server {
        Self::try_start_with_env(data_dir, config, env)
            .unwrap_or_else(|status| panic!("callhook exited before listening: {status}"))
    }

    /// Like [`Server::start_with_env`]; the exit status if the process ends before it listens.
    pub fn try_start_with_env(
        data_dir: &Path,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Server, std::process::ExitStatus> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(text) = config {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, text).expect("write config");
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().expect("spawn callhook");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        if line.is_empty() {
            return Err(child.wait().expect("wait"));
        }
        let (public, admin) =
            parse_listening(&line).unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let console = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix("console=")?.parse().ok());
        Ok(Server {
            child,
            public,
            admin,
            console,
            data_dir: data_dir.to_owned(),
        })
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        let status = self.child.wait().expect("wait");
        std::mem::forget(self);
        status
    }

    /// Kills the process with SIGKILL (a crash).
    pub fn kill(mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Returns the exit status if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Sends one request and returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        http(self.public, method, path_and_query, content_type, body, &[])
    }

    /// Returns the admin endpoint's (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, None, b"", &[])
    }

    /// Opens the sink database read-only.
    pub fn db(&self) -> rusqlite::Connection {
        open_read_only(&self.data_dir.join("callhook.db"))
    }

    /// Waits until the normalizer has consumed everything appended so far.
    pub fn wait_until_normalized(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, metrics) = self.admin_get("/metrics");
            let lag = metric_value(&metrics, "callhook_normalizer_lag_records").unwrap_or(-1.0);
            let appended = raw_record_count(&self.data_dir);
            let consumed = consumed_offsets(&self.data_dir);
            if lag == 0.0 && consumed >= appended {
                // The loop updates its counters right after the commit the database shows:
                // give it that moment, so that a scrape that follows sees them.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "normalizer did not catch up: lag {lag}, appended {appended}, consumed {consumed}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("callhook listening ")?;
    let mut public = None;
    let mut admin = None;
    for part in rest.split_whitespace() {
        if let Some(addr) = part.strip_prefix("public=") {
            public = addr.parse().ok();
        } else if let Some(addr) = part.strip_prefix("admin=") {
            admin = addr.parse().ok();
        }
    }
    Some((public?, admin?))
}

/// One HTTP/1.1 request over a fresh loopback connection; returns (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    read_response(&mut stream)
}

/// Reads a `Connection: close` response.
pub fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Returns a Prometheus sample value (summing every series of the name).
/// Returns the value of one exact series (`name{label="value",...}` as exported).
pub fn metric_series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let series_name = series.split('{').next().unwrap_or(series);
        if series_name == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

pub fn open_read_only(path: &Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// Records in the raw log (all partitions), compacted ones included.
pub fn raw_record_count(data_dir: &Path) -> i64 {
    let conn = open_read_only(&data_dir.join("rawlog.db"));
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM log_records) \
         + (SELECT COALESCE(SUM(record_count), 0) FROM log_segments)",
        [],
        |row| row.get(0),
    )
    .expect("count records")
}

/// Sum of the normalizer's stored next offsets (= records consumed when nothing was deleted).
pub fn consumed_offsets(data_dir: &Path) -> i64 {
    let path = data_dir.join("callhook.db");
    if !path.exists() {
        return 0;
    }
    let conn = open_read_only(&path);
    conn.query_row(
        "SELECT COALESCE(SUM(next_offset), 0) FROM consumer_offsets",
        [],
        |row| row.get(0),
    )
    .unwrap_or(0)
}

/// One golden fixture request, as the vendor sends it.
pub struct FixturePush {
    pub vendor: String,
    pub case: String,
    pub source: String,
    pub method: String,
    pub content_type: Option<String>,
    pub query: Option<String>,
    pub body: Vec<u8>,
    pub expected: serde_json::Value,
}

impl FixturePush {
    /// The request target: `/hooks/<source>?<query>`.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("/hooks/{}?{query}", self.source),
            None => format!("/hooks/{}", self.source),
        }
    }
}

/// Every golden fixture of every vendor, in sorted order.
pub fn fixture_pushes() -> Vec<FixturePush> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("normalizer/fixtures");
    let mut paths = Vec::new();
    for vendor in std::fs::read_dir(&root).expect("fixtures") {
        for case in std::fs::read_dir(vendor.expect("entry").path()).expect("vendor dir") {
            let path = case.expect("entry").path();
            if path.to_string_lossy().ends_with(".request.json") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths.into_iter().map(|path| load_fixture(&path)).collect()
}

fn load_fixture(path: &Path) -> FixturePush {
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let expected_path = PathBuf::from(
        path.to_string_lossy()
            .replace(".request.json", ".expected.json"),
    );
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(expected_path).expect("read expected"))
            .expect("json");
    let body = match (&request["body"], &request["body_json"]) {
        (serde_json::Value::String(text), _) => text.clone().into_bytes(),
        (_, serde_json::Value::Null) => Vec::new(),
        (_, json) => serde_json::to_vec(json).expect("body_json"),
    };
    FixturePush {
        vendor: path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        case: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: request["source"]["name"]
            .as_str()
            .expect("source name")
            .to_owned(),
        method: request["method"].as_str().unwrap_or("POST").to_owned(),
        content_type: request["content_type"].as_str().map(str::to_owned),
        query: request["query"].as_str().map(str::to_owned),
        body,
        expected,
    }
}

/// A config with one source per distinct fixture source (name, dialect, account, zone), plus
/// the three default sources, so every fixture is posted to the source it was mapped with.
pub fn fixture_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("normalizer/fixtures");
    let mut sources = std::collections::BTreeMap::new();
    for name in ["7moor", "coocenter", "uincall"] {
        sources.insert(
            name.to_owned(),
            format!("[sources.\"{name}\"]\ndialect = \"{name}\"\n"),
        );
    }
    for vendor in std::fs::read_dir(&root).expect("fixtures") {
        for case in std::fs::read_dir(vendor.expect("entry").path()).expect("vendor dir") {
            let path = case.expect("entry").path();
            if !path.to_string_lossy().ends_with(".request.json") {
                continue;
            }
            let request: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let source = &request["source"];
            let name = source["name"].as_str().expect("name").to_owned();
            let mut section = format!(
                "[sources.\"{name}\"]\ndialect = \"{}\"\n",
                source["dialect"].as_str().expect("dialect")
            );
            if let Some(account) = source["account"].as_str() {
                section.push_str(&format!("account = \"{account}\"\n"));
            }
            if let Some(offset) = source["utc_offset"].as_str() {
                section.push_str(&format!("utc_offset = \"{offset}\"\n"));
            }
            sources.insert(name, section);
        }
    }
    sources.into_values().collect::<Vec<_>>().join("\n")
}

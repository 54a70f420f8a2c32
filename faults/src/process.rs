//! Child processes: `callhook serve|ingest|normalize`, `callhook simulate`, and signals.
//!
//! Every child is started in its own process group and killed on drop, so a failing fault
//! leaves nothing running behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a callhook process may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this suite started and has not reaped; no memory is shared.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A running `callhook` process.
pub struct Callhook {
    child: Child,
    /// What was run (for messages).
    pub name: String,
    /// The receiver, when it has one.
    pub public: Option<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
}

/// What to start.
pub struct Launch<'a> {
    /// The `callhook` binary.
    pub bin: &'a Path,
    /// `serve`, `ingest` or `normalize`.
    pub command: &'a str,
    /// The config file.
    pub config: &'a Path,
    /// The data directory.
    pub data_dir: &'a Path,
    /// The receiver's address (`None` for `normalize`).
    pub listen: Option<SocketAddr>,
    /// The admin address.
    pub admin: SocketAddr,
    /// `FAILPOINTS`, if any.
    pub failpoints: Option<&'a str>,
    /// Stderr goes here (appended).
    pub log: PathBuf,
}

impl Callhook {
    /// Starts the process; returns once it printed its listening line, or the error with the
    /// tail of its log when it exited first.
    pub fn start(launch: &Launch<'_>) -> anyhow::Result<Callhook> {
        let mut command = Command::new(launch.bin);
        command
            .arg(launch.command)
            .arg("--config")
            .arg(launch.config)
            .arg("--data-dir")
            .arg(launch.data_dir)
            .arg("--admin-listen")
            .arg(launch.admin.to_string());
        if let Some(listen) = launch.listen {
            command.arg("--listen").arg(listen.to_string());
        }
        command.env("RUST_LOG", "info").env_remove("FAILPOINTS");
        if let Some(failpoints) = launch.failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)?;
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", launch.bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (sender, receiver) = mpsc::channel();
        // Reads the announcement, then drains stdout so the child never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("callhook listening") {
                    let _ = sender.send(line);
                }
            }
        });
        let name = format!("callhook {}", launch.command);
        let line = loop {
            if let Ok(line) = receiver.recv_timeout(Duration::from_millis(50)) {
                break line;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited with {status} before listening: {}",
                    log_tail(&launch.log, 6)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                bail!("{name} did not start listening");
            }
        };
        let mut public = None;
        let mut admin = None;
        for word in line.split_whitespace() {
            if let Some(addr) = word.strip_prefix("public=") {
                public = addr.parse().ok();
            } else if let Some(addr) = word.strip_prefix("admin=") {
                admin = addr.parse().ok();
            }
        }
        Ok(Callhook {
            child,
            name,
            public,
            admin: admin.with_context(|| format!("no admin address in `{line}`"))?,
        })
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal_number: libc::c_int) {
        signal(self.pid(), signal_number);
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; SIGKILL after it (`None`).
    pub fn terminate(mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        None
    }

    /// Returns the exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Returns `/readyz`'s status code (0 when it does not answer).
    pub fn ready_status(&self) -> u16 {
        http_get(self.admin, "/readyz").map_or(0, |response| response.status)
    }

    /// Returns true when `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.ready_status() == 200
    }

    /// Returns a metric's value summed over its series, if exported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.admin, "/metrics").ok()?.body;
        let mut found = None;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += value;
        }
        found
    }

    /// Returns (VmRSS KiB, open fds) now.
    pub fn resources(&self) -> (u64, u64) {
        let pid = self.pid();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64);
        (rss, fds)
    }
}

impl Drop for Callhook {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a log file, on one line.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// An HTTP response, as far as the suite reads one.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// Returns a header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One request over a fresh connection (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        request.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status line")?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// `GET path`.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    http(addr, "GET", path, None, b"")
}

/// Returns a free loopback port's address.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

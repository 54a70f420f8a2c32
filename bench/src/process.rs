//! Child processes of the harness: servers that announce their address on stdout, and
//! one-shot tools that print one JSON object.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procfs::{memory_of, Memory};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server process.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin address, if it has one.
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// Starts `command`, with stderr appended to `stderr_log`, and waits for the stdout line
    /// that starts with `marker`: `marker ADDR` (bare-hyper) or
    /// `marker public=ADDR admin=ADDR` (callhook serve).
    pub fn start(mut command: Command, marker: &str, stderr_log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(stderr_log)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let marker = marker.to_owned();
        // Reads the announcement, then keeps draining stdout so the child never blocks on it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.starts_with(&marker) {
                    let _ = sender.send(line);
                    sent = true;
                }
            }
        });
        let started = Instant::now();
        let line = loop {
            if let Ok(line) = receiver.recv_timeout(Duration::from_millis(100)) {
                break line;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{command:?} exited with {status} before listening (see {})",
                    stderr_log.display()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                bail!("{command:?} did not announce its address");
            }
        };
        let (addr, admin) = parse_announcement(&line)?;
        Ok(Server { child, addr, admin })
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the process's memory now (`VmHWM` is its peak so far).
    pub fn memory(&self) -> Memory {
        memory_of(self.pid()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after `grace`); returns the memory read
    /// just before the signal.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<Memory> {
        let memory = self.memory();
        let pid = libc::pid_t::try_from(self.pid()).context("pid")?;
        // SAFETY: plain syscall on our own child's pid; it has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(memory);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Ok(memory);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_announcement(line: &str) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    let mut public = None;
    let mut admin = None;
    for word in line.split_whitespace() {
        if let Some(value) = word.strip_prefix("public=") {
            public = Some(value.parse()?);
        } else if let Some(value) = word.strip_prefix("admin=") {
            admin = Some(value.parse()?);
        } else if let Ok(addr) = word.parse::<SocketAddr>() {
            public = Some(addr);
        }
    }
    let public = public.with_context(|| format!("no address in `{line}`"))?;
    Ok((public, admin))
}

/// Runs `command` to completion and parses its stdout as one JSON object.
pub fn run_json(mut command: Command, stderr_log: &Path) -> anyhow::Result<serde_json::Value> {
    let log = std::fs::File::create(stderr_log)?;
    let output = command
        .stdin(Stdio::null())
        .stderr(log)
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {} (see {})",
            output.status,
            stderr_log.display()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .with_context(|| format!("no JSON from {command:?}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Fetches `path` from an HTTP server with a one-shot HTTP/1.0 request (the admin
/// listener's `/metrics`); returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_announcements() {
        let (public, admin) =
            parse_announcement("callhook listening public=127.0.0.1:80 admin=127.0.0.1:81")
                .unwrap();
        assert_eq!(public.port(), 80);
        assert_eq!(admin.unwrap().port(), 81);
        let (public, admin) = parse_announcement("bare-hyper listening 127.0.0.1:82").unwrap();
        assert_eq!(public.port(), 82);
        assert!(admin.is_none());
        assert!(parse_announcement("nothing here").is_err());
    }
}

//! Headless Chromium driven over the Chrome DevTools Protocol, for the console's browser test.
//!
//! The browser is Debian's `chromium` package (`scripts/test` installs it as root; no browser
//! is downloaded at test time). It is found through `CALLHOOK_CHROMIUM`, then `chromium`,
//! `chromium-browser`, `google-chrome` on `PATH`. The protocol runs over
//! `--remote-debugging-pipe`: NUL-terminated JSON messages on file descriptors 3 (to the
//! browser) and 4 (from it), so the driver needs no WebSocket client and no npm package.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// Returns the Chromium binary to use, if one is installed.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CALLHOOK_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&paths).map(move |dir| dir.join(name)))
    .find(|path| path.is_file())
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: BufReader<File>,
    next_id: u64,
    session: Option<String>,
    profile: PathBuf,
}

impl Browser {
    /// Starts `binary` headless with a fresh profile and opens a blank page.
    pub fn launch(binary: &Path) -> std::io::Result<Browser> {
        let (to_read, to_write) = pipe()?;
        let (from_read, from_write) = pipe()?;
        let profile = std::env::temp_dir().join(format!(
            "callhook-chromium-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let mut command = Command::new(binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--window-size=1280,900",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2, close) are
        // made. The ends are first copied above 10: a pipe end may itself be 3 or 4, and
        // `dup2(fd, fd)` would leave its close-on-exec flag set.
        unsafe {
            command.pre_exec(move || {
                let to_read_high = libc::fcntl(to_read, libc::F_DUPFD, 10);
                let from_write_high = libc::fcntl(from_write, libc::F_DUPFD, 10);
                if to_read_high < 0
                    || from_write_high < 0
                    || libc::dup2(to_read_high, 3) < 0
                    || libc::dup2(from_write_high, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(to_read_high);
                libc::close(from_write_high);
                Ok(())
            });
        }
        let child = command.spawn()?;
        // SAFETY: each descriptor came from pipe2 above and is owned by exactly one File.
        let (to_browser, from_browser) = unsafe {
            libc::close(to_read);
            libc::close(from_write);
            (File::from_raw_fd(to_write), File::from_raw_fd(from_read))
        };
        let mut browser = Browser {
            child,
            to_browser,
            from_browser: BufReader::new(from_browser),
            next_id: 0,
            session: None,
            profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"].as_str().map(str::to_owned);
        Ok(browser)
    }

    /// Sends one command (to the page once attached) and returns its result; events that
    /// arrive meanwhile are dropped.
    pub fn call(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.to_browser.write_all(&bytes)?;
        loop {
            let mut raw = Vec::new();
            if self.from_browser.read_until(0, &mut raw)? == 0 {
                return Err(std::io::Error::other(
                    "the browser closed the protocol pipe",
                ));
            }
            raw.pop();
            let reply: Value = serde_json::from_slice(&raw)?;
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(std::io::Error::other(format!("{method}: {error}")));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its JSON value.
    pub fn evaluate(&mut self, expression: &str) -> std::io::Result<Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(std::io::Error::other(format!("{expression}: {exception}")));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Loads `url` and waits until its document is complete.
    pub fn navigate(&mut self, url: &str) -> std::io::Result<()> {
        self.call("Page.navigate", json!({"url": url}))?;
        std::thread::sleep(Duration::from_millis(100));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
    }

    /// Polls `expression` every 50 ms until it is truthy, or fails after `timeout`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.evaluate(expression).unwrap_or(Value::Null);
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "timed out waiting for {expression}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the page's viewport at `path`.
    pub fn screenshot(&mut self, path: &Path) -> std::io::Result<()> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(std::io::Error::other)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A pipe whose both ends close on exec (dup2 clears that flag on the child's copies).
fn pipe() -> std::io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

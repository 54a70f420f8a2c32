//! Fault 4: the disk fills up under load, then space comes back; and the disk turns read-only.
//!
//! - **Full**: the data directory is a small tmpfs (a real `ENOSPC`); a ballast file takes the
//!   free space while the load runs. Expected: `503` with `Retry-After`, `/readyz` red, the
//!   process alive, no corruption; once the ballast is deleted, recovery with nothing
//!   acknowledged lost.
//! - **Read-only**: `mount -o remount,ro` of a filesystem with files open for writing fails
//!   with `EBUSY` (SQLite keeps its files open), so the suite does what a failing disk does to
//!   ext4 mounted `errors=remount-ro`: the data directory is an ext4 loop mount, and
//!   `/sys/fs/ext4/<dev>/trigger_fs_error` turns it read-only under the running process.
//!   Expected: `503` with `Retry-After`, `/readyz` red, alive. An ext4 filesystem that went
//!   read-only on an error cannot be remounted read-write before `e2fsck`, so "rw again" is
//!   stop, unmount, `e2fsck`, mount, start, as an operator would: nothing acknowledged lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{probe_body, wait_ready, Rig, Suite, CONSUMER};
use crate::checks;
use crate::process::{http, Callhook};
use crate::table::Row;

/// A mount that is undone on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> anyhow::Result<Mount> {
        command(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &at.to_string_lossy(),
            ],
        )?;
        Ok(Mount(at.to_owned()))
    }

    fn ext4(image: &Path, at: &Path) -> anyhow::Result<Mount> {
        command(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &image.to_string_lossy(),
                &at.to_string_lossy(),
            ],
        )?;
        Ok(Mount(at.to_owned()))
    }

    fn device(&self) -> anyhow::Result<String> {
        let output = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.0)
            .output()?;
        let source = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        source
            .rsplit('/')
            .next()
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .context("no device for the mount")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn command(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program).args(args).output()?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// What probes saw while the disk was unusable.
#[derive(Default)]
struct Observed {
    probes: u32,
    refused_with_retry_after: u32,
    refused_without: u32,
    acknowledged: u32,
    readyz_red: u32,
}

/// Probes the receiver (source `probe`) and `/readyz` every 200 ms for `hold` after the first
/// refusal (or until `limit` without one).
fn observe(serve: &mut Callhook, probe: &mut u64, hold: Duration, limit: Duration) -> Observed {
    let mut seen = Observed::default();
    let started = Instant::now();
    let mut first_refusal: Option<Instant> = None;
    while started.elapsed() < limit && first_refusal.is_none_or(|at| at.elapsed() < hold) {
        if serve.try_wait().is_some() {
            break;
        }
        *probe += 1;
        let public = serve.public.expect("serve has a receiver");
        if let Ok(response) = http(
            public,
            "POST",
            "/hooks/probe",
            Some("application/json"),
            &probe_body(*probe),
        ) {
            seen.probes += 1;
            match (response.status, response.header("retry-after")) {
                (200, _) => seen.acknowledged += 1,
                (503, Some(_)) => {
                    seen.refused_with_retry_after += 1;
                    first_refusal.get_or_insert_with(Instant::now);
                }
                _ => seen.refused_without += 1,
            }
        }
        if serve.ready_status() == 503 {
            seen.readyz_red += 1;
            first_refusal.get_or_insert_with(Instant::now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

fn judge(row: &mut Row, what: &str, serve: &mut Callhook, seen: &Observed) {
    row.note(format!(
        "{what}: {} probes: {} refused 503 + Retry-After, {} other refusals, {} acknowledged; /readyz red {} time(s)",
        seen.probes, seen.refused_with_retry_after, seen.refused_without, seen.acknowledged, seen.readyz_red
    ));
    if let Some(status) = serve.try_wait() {
        row.fail(format!("{what}: `callhook serve` died ({status})"));
    }
    if seen.refused_with_retry_after == 0 {
        row.fail(format!(
            "{what}: no push was refused with 503 + Retry-After"
        ));
    }
    if seen.refused_without > 0 {
        row.fail(format!(
            "{what}: {} refusal(s) without 503 + Retry-After",
            seen.refused_without
        ));
    }
    if seen.readyz_red == 0 {
        row.fail(format!("{what}: /readyz never turned red"));
    }
}

/// Fills the filesystem of `dir` with a ballast file until `ENOSPC`.
fn fill(ballast: &Path) -> anyhow::Result<u64> {
    let mut file = std::fs::File::create(ballast)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(bytes) => written += bytes as u64,
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => return Err(error.into()),
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

/// Waits for recovery after space came back: ready, a probe acknowledged, the normalizer past
/// the raw log's end.
fn recover(rig: &Rig, serve: &Callhook, probe: &mut u64, since: Instant, row: &mut Row) {
    let target = checks::raw_end(&rig.rawlog()).unwrap_or(0);
    while since.elapsed() < Duration::from_secs(120) {
        *probe += 1;
        let acknowledged = serve.ready()
            && http(
                rig.listen,
                "POST",
                "/hooks/probe",
                Some("application/json"),
                &probe_body(*probe),
            )
            .is_ok_and(|response| response.status == 200);
        if acknowledged && checks::sink_consumed(&rig.db(), CONSUMER) >= target {
            row.recovery.push(since.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    row.fail("no recovery within 120 s of the space coming back");
}

/// Runs both halves.
pub fn run(suite: &mut Suite) -> anyhow::Result<Vec<Row>> {
    Ok(vec![full(suite)?, read_only(suite)?])
}

fn full(suite: &mut Suite) -> anyhow::Result<Row> {
    let mut row = Row::new("disk full (tmpfs), then space back");
    let mut rig = Rig::new(suite, "disk-full", None, "")?;
    let _mount = Mount::tmpfs(&rig.data, "192m")?;
    let mut serve = rig.start(None)?;
    if !wait_ready(&serve, Duration::from_secs(30)) {
        bail!("`callhook serve` did not become ready");
    }
    let before = rig.baseline(
        suite,
        suite.pick(Duration::from_secs(10), Duration::from_secs(6)),
    )?;
    row.p99_before_ms = before.p99_ms;
    let iterations: u32 = suite.pick(3, 1);
    let mut probe = 0u64;
    let load = rig.load(suite, Duration::from_secs(u64::from(iterations) * 30 + 5))?;
    let ballast = rig.data.join("ballast");
    for _ in 0..iterations {
        std::thread::sleep(Duration::from_secs(4));
        fill(&ballast)?;
        let seen = observe(
            &mut serve,
            &mut probe,
            Duration::from_secs(8),
            Duration::from_secs(40),
        );
        judge(&mut row, "disk full", &mut serve, &seen);
        std::fs::remove_file(&ballast)?;
        let since = Instant::now();
        recover(&rig, &serve, &mut probe, since, &mut row);
        row.iterations += 1;
    }
    let attempt = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&rig.data)
        .output()?;
    match attempt.status.success() {
        true => {
            let _ = Command::new("mount").args(["-o", "remount,rw"]).arg(&rig.data).status();
            row.fail("`mount -o remount,ro` succeeded with callhook's files open (unexpected)");
        }
        false => row.note(format!(
            "`mount -o remount,ro` of the data dir under the running process: {} (so read-only is tested on ext4, next row)",
            String::from_utf8_lossy(&attempt.stderr).trim().replace('\n', " ")
        )),
    }
    rig.finish(load)?;
    row.acknowledged = rig.acknowledged(1);
    row.p99_during_ms = rig.p99(1);
    row.note(format!("load during the faults: {}", rig.failures_text(1)));
    rig.final_checks(suite, serve, &mut row);
    Ok(row)
}

fn read_only(suite: &mut Suite) -> anyhow::Result<Row> {
    let mut row = Row::new("disk read-only (ext4 errors=remount-ro)");
    let mut rig = Rig::new(suite, "disk-ro", None, "")?;
    let image = rig.dir.join("ext4.img");
    command("truncate", &["-s", "384M", &image.to_string_lossy()])?;
    command("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()])?;
    let mut mount = Some(Mount::ext4(&image, &rig.data)?);
    let mut serve = rig.start(None)?;
    if !wait_ready(&serve, Duration::from_secs(30)) {
        bail!("`callhook serve` did not become ready");
    }
    let before = rig.baseline(
        suite,
        suite.pick(Duration::from_secs(10), Duration::from_secs(6)),
    )?;
    row.p99_before_ms = before.p99_ms;
    let load = rig.load(suite, Duration::from_secs(40))?;
    std::thread::sleep(Duration::from_secs(5));
    let device = mount.as_ref().context("mounted")?.device()?;
    std::fs::write(
        format!("/sys/fs/ext4/{device}/trigger_fs_error"),
        "callhook fault suite\n",
    )
    .context("cannot trigger the ext4 error")?;
    let mut probe = 0u64;
    let seen = observe(
        &mut serve,
        &mut probe,
        Duration::from_secs(8),
        Duration::from_secs(30),
    );
    judge(&mut row, "read-only", &mut serve, &seen);
    match serve.terminate(Duration::from_secs(60)) {
        Some(status) => row.note(format!("SIGTERM on the read-only disk: {status}")),
        None => row.fail("no exit within 60 s of SIGTERM on the read-only disk"),
    }
    drop(mount.take());
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()?;
    row.note(format!(
        "e2fsck exit code {}",
        fsck.status.code().unwrap_or(-1)
    ));
    mount = Some(Mount::ext4(&image, &rig.data)?);
    let since = Instant::now();
    let target = checks::raw_end(&rig.rawlog())?;
    let serve = rig.start(None)?;
    match rig.wait_recovered(&serve, target, since, Duration::from_secs(120)) {
        Some(took) => row.recovery.push(took),
        None => row.fail("no recovery within 120 s of the remount"),
    }
    row.iterations = 1;
    rig.finish(load)?;
    row.acknowledged = rig.acknowledged(1);
    row.p99_during_ms = rig.p99(1);
    row.note(format!("load during the fault: {}", rig.failures_text(1)));
    rig.final_checks(suite, serve, &mut row);
    drop(mount);
    Ok(row)
}

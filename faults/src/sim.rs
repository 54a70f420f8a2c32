//! The load: `callhook simulate` in the background (realistic mixed vendor traffic with vendor
//! retries and reordering, a ledger of every acknowledged push), and `--verify` after a fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// What a simulate run reported (`--json`).
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Acknowledged (`200` + `200`).
    pub acknowledged: u64,
    /// Failures by class.
    pub failures: Vec<(String, u64)>,
    /// Ack latency p99, ms.
    pub p99_ms: f64,
    /// Ack latency p50, ms.
    pub p50_ms: f64,
    /// Acknowledged per second.
    pub per_second: f64,
    /// Wall time of the run, seconds.
    pub elapsed_seconds: f64,
    /// Call flows the run simulated.
    pub flows: u64,
}

impl LoadReport {
    fn parse(json: &Value) -> LoadReport {
        let load = &json["load"];
        let number = |value: &Value| value.as_f64().unwrap_or(0.0);
        LoadReport {
            acknowledged: load["acknowledged"].as_u64().unwrap_or(0),
            failures: load["failures"]
                .as_object()
                .map(|classes| {
                    classes
                        .iter()
                        .map(|(class, count)| (class.clone(), count.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
            p99_ms: number(&load["latency"]["p99_ms"]),
            p50_ms: number(&load["latency"]["p50_ms"]),
            per_second: number(&load["acknowledged_per_second"]),
            elapsed_seconds: number(&load["elapsed_seconds"]),
            flows: json["plan"]["flows"].as_u64().unwrap_or(0),
        }
    }

    /// Failure classes as `class: n, ...`.
    pub fn failures_text(&self) -> String {
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|(class, count)| format!("{class} {count}"))
            .collect();
        parts.join(", ")
    }
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Call flows per second; 0: as fast as the connections go, for `flows` flows.
    pub flows_per_second: f64,
    /// For how long (at a rate), or how many flows (unthrottled).
    pub duration: Duration,
    /// Connections.
    pub connections: usize,
    /// Seed.
    pub seed: u64,
}

/// A `callhook simulate` run in the background.
pub struct Load {
    child: Option<Child>,
    stdout: PathBuf,
}

impl Load {
    /// Starts sending to `target` per `plan`, writing the ledger to `ledger`.
    pub fn start(
        bin: &Path,
        target: SocketAddr,
        plan: &LoadPlan,
        ledger: &Path,
    ) -> anyhow::Result<Load> {
        let stdout = ledger.with_extension("report.json");
        let child = Command::new(bin)
            .arg("simulate")
            .arg("--target")
            .arg(format!("http://{target}"))
            .arg("--calls-per-second")
            .arg(plan.flows_per_second.to_string())
            .args(match plan.flows_per_second > 0.0 {
                true => [
                    "--duration".to_owned(),
                    format!("{}s", plan.duration.as_secs().max(1)),
                ],
                false => [
                    "--calls".to_owned(),
                    plan.duration.as_secs().max(1).to_string(),
                ],
            })
            .arg("--connections")
            .arg(plan.connections.to_string())
            .args(["--duplicate-rate", "0.05", "--reorder-rate", "0.1"])
            .args(["--timeout-ms", "10000", "--json"])
            .arg("--seed")
            .arg(plan.seed.to_string())
            .arg("--ledger")
            .arg(ledger)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(ledger.with_extension("stderr"))?)
            .spawn()
            .context("cannot start callhook simulate")?;
        Ok(Load {
            child: Some(child),
            stdout,
        })
    }

    /// Returns true while it is still sending.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the end of the run and returns its report.
    pub fn finish(mut self) -> anyhow::Result<LoadReport> {
        let Some(mut child) = self.child.take() else {
            bail!("the load was already finished");
        };
        let status = child.wait()?;
        let text = std::fs::read_to_string(&self.stdout)?;
        let json = last_json(&text).with_context(|| {
            format!(
                "`callhook simulate` ({status}) printed no JSON report; see {}",
                self.stdout.display()
            )
        })?;
        Ok(LoadReport::parse(&json))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Parses the last top-level JSON object of `text` (pretty-printed or on one line).
pub fn last_json(text: &str) -> Option<Value> {
    let start = text
        .rfind("\n{")
        .map(|at| at + 1)
        .or_else(|| text.find('{'))?;
    serde_json::from_str(&text[start..]).ok()
}

/// What `callhook simulate --verify` found.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// Acknowledged pushes missing (no dedupe key, or events missing).
    pub lost: u64,
    /// Pushes stored too often, and events no push explains.
    pub duplicated: u64,
    /// Every other mismatch (calls rows, dead letters, stray calls).
    pub other: u64,
    /// The mismatch kinds found, `kind n, ...`.
    pub kinds: String,
    /// The first mismatch details.
    pub examples: Vec<String>,
}

/// Runs `callhook simulate --verify --ledger LEDGER --db DB --wait-seconds WAIT --json`.
pub fn verify(bin: &Path, ledger: &Path, db: &Path, wait: Duration) -> anyhow::Result<Verified> {
    let output = Command::new(bin)
        .arg("simulate")
        .arg("--verify")
        .arg("--ledger")
        .arg(ledger)
        .arg("--db")
        .arg(db)
        .arg("--wait-seconds")
        .arg(wait.as_secs().to_string())
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .context("cannot run callhook simulate --verify")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let json = last_json(&text).with_context(|| {
        format!(
            "`callhook simulate --verify` ({}) printed no JSON: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let kinds = json["mismatches_by_kind"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let count = |names: &[&str]| -> u64 {
        names
            .iter()
            .map(|name| kinds.get(*name).and_then(Value::as_u64).unwrap_or(0))
            .sum()
    };
    let total = json["mismatch_count"].as_u64().unwrap_or(0);
    let lost = count(&["push_missing", "events_missing"]);
    let duplicated = count(&["stored_too_often", "unexpected_event"]);
    let examples = json["mismatches"]
        .as_array()
        .map(|all| {
            all.iter()
                .take(5)
                .map(|mismatch| {
                    format!(
                        "{} {}: {}",
                        mismatch["kind"].as_str().unwrap_or("?"),
                        mismatch["source"].as_str().unwrap_or("?"),
                        mismatch["detail"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let kinds_text: Vec<String> = kinds
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    Ok(Verified {
        lost,
        duplicated,
        other: total - lost - duplicated,
        kinds: kinds_text.join(", "),
        examples,
    })
}

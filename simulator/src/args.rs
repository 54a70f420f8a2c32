//! The flags of `callhook simulate`, and their validation into typed settings (no I/O).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::flow::SimDialect;
use crate::generate::VendorMix;
use crate::schedule::SourceNames;

/// `callhook simulate`: vendor call flows at a chosen rate; `--verify` checks a database
/// against the ledger of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Check the database (--db) against a ledger (--ledger) instead of sending traffic.
    #[arg(long)]
    pub verify: bool,
    /// Base URL of the receiver; pushes go to `<target>/hooks/<source>`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Call flows started per second; 0 sends as fast as the connections go.
    #[arg(long, default_value_t = 50.0)]
    pub calls_per_second: f64,
    /// How long to start flows for (`90`, `90s`, `5m`, `1h`): calls-per-second × duration flows.
    #[arg(long, conflicts_with = "calls")]
    pub duration: Option<String>,
    /// How many call flows to simulate (default 1000); a few are agent sessions with no call.
    #[arg(long)]
    pub calls: Option<u64>,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Reuse connections (`on`) or open one per push (`off`, as many vendors do).
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub keep_alive: bool,
    /// Dialect weights: `7moor=40,7moor-v2=20,coocenter=20,uincall=20`.
    #[arg(long, default_value = "7moor=40,7moor-v2=20,coocenter=20,uincall=20")]
    pub vendor_mix: String,
    /// The source a dialect pushes to, `DIALECT=NAME` (repeatable). Defaults: 7moor and
    /// 7moor-v2 → `7moor`, coocenter → `coocenter`, uincall → `uincall`.
    #[arg(long = "source", value_name = "DIALECT=NAME")]
    pub sources: Vec<String>,
    /// Fraction of pushes sent twice, byte for byte (vendor retries).
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Longest delay of a retry after the first sending, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub duplicate_delay_ms: u64,
    /// Fraction of flows whose pushes are sent in a shuffled order.
    #[arg(long, default_value_t = 0.0)]
    pub reorder_rate: f64,
    /// Over how long one flow's pushes are sent, in milliseconds (the vendor times inside the
    /// pushes keep realistic durations).
    #[arg(long, default_value_t = 2000)]
    pub flow_spread_ms: u64,
    /// Seed of every random choice (default: from the clock; printed in the report). The same
    /// seed and --epoch give byte-identical pushes.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The vendor clock at the first flow, RFC 3339 or epoch seconds (default: now).
    #[arg(long)]
    pub epoch: Option<String>,
    /// Longest time one push may take (connect, request, response), in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Ledger file: written by a run (one JSON line per acknowledged push and per call), read
    /// by --verify.
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// The sink database to verify (`<data_dir>/callhook.db`).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// With --verify: keep re-checking for up to this long while the normalizer catches up.
    #[arg(long, default_value_t = 0)]
    pub wait_seconds: u64,
    /// With --verify: how far the receiver's clock may be from this machine's, in seconds.
    #[arg(long, default_value_t = 2)]
    pub clock_skew_seconds: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("`{text}` is not `on` or `off`")),
    }
}

/// What to do, validated.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Send traffic.
    Run(RunSettings),
    /// Check a database against a ledger.
    Verify(VerifySettings),
}

/// A validated simulation run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Base URL.
    pub target: String,
    /// Flows to simulate.
    pub flows: u64,
    /// Between two flows' starts; `None`: unthrottled.
    pub flow_interval: Option<Duration>,
    /// Connections.
    pub connections: NonZeroUsize,
    /// Keep-alive.
    pub keep_alive: bool,
    /// Dialect weights.
    pub mix: VendorMix,
    /// Source per dialect.
    pub sources: SourceNames,
    /// Fraction of pushes sent twice.
    pub duplicate_rate: f64,
    /// Longest retry delay.
    pub duplicate_delay: Duration,
    /// Fraction of flows reordered.
    pub reorder_rate: f64,
    /// Spread of one flow's pushes.
    pub flow_spread: Duration,
    /// The seed.
    pub seed: u64,
    /// The vendor clock at flow 0.
    pub epoch: DateTime<Utc>,
    /// Per-push timeout.
    pub request_timeout: Duration,
    /// Ledger to write.
    pub ledger: Option<PathBuf>,
    /// JSON report.
    pub json: bool,
}

/// A validated verification.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// Ledger to read.
    pub ledger: PathBuf,
    /// Database to check.
    pub db: PathBuf,
    /// How long to re-check.
    pub wait: Duration,
    /// Clock skew tolerated.
    pub clock_skew: Duration,
    /// JSON report.
    pub json: bool,
}

impl SimulateArgs {
    /// Checks the flags and turns them into a [`Mode`].
    pub fn validate(&self) -> Result<Mode, String> {
        if self.verify {
            let ledger = self.ledger.clone().ok_or("--verify needs --ledger FILE")?;
            let db = self
                .db
                .clone()
                .ok_or("--verify needs --db PATH/callhook.db")?;
            return Ok(Mode::Verify(VerifySettings {
                ledger,
                db,
                wait: Duration::from_secs(self.wait_seconds),
                clock_skew: Duration::from_secs(self.clock_skew_seconds),
                json: self.json,
            }));
        }
        if self.db.is_some() {
            return Err("--db is only for --verify".to_owned());
        }
        let rate = self.calls_per_second;
        if !rate.is_finite() || rate < 0.0 {
            return Err(format!("--calls-per-second {rate} must be 0 or more"));
        }
        let flows = match (&self.duration, self.calls) {
            (Some(_), _) if rate == 0.0 => {
                return Err("--duration needs a --calls-per-second above 0".to_owned())
            }
            (Some(text), _) => (parse_duration(text)?.as_secs_f64() * rate).round() as u64,
            (None, Some(calls)) => calls,
            (None, None) => 1000,
        };
        if flows == 0 {
            return Err("nothing to simulate: 0 flows".to_owned());
        }
        Ok(Mode::Run(RunSettings {
            target: self.target.clone(),
            flows,
            flow_interval: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            connections: NonZeroUsize::new(self.connections)
                .ok_or("--connections must be at least 1")?,
            keep_alive: self.keep_alive,
            mix: VendorMix::parse(&self.vendor_mix).map_err(|e| format!("--vendor-mix: {e}"))?,
            sources: parse_sources(&self.sources)?,
            duplicate_rate: fraction("--duplicate-rate", self.duplicate_rate)?,
            duplicate_delay: Duration::from_millis(self.duplicate_delay_ms),
            reorder_rate: fraction("--reorder-rate", self.reorder_rate)?,
            flow_spread: Duration::from_millis(self.flow_spread_ms),
            seed: self.seed.unwrap_or_else(clock_seed),
            epoch: match &self.epoch {
                Some(text) => parse_epoch(text)?,
                None => Utc::now(),
            },
            request_timeout: Duration::from_millis(self.timeout_ms.max(1)),
            ledger: self.ledger.clone(),
            json: self.json,
        }))
    }
}

fn fraction(flag: &str, value: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{flag} {value} must be between 0 and 1"))
    }
}

fn clock_seed() -> u64 {
    let now = Utc::now();
    (now.timestamp() as u64).wrapping_mul(1_000_000_007) ^ u64::from(now.timestamp_subsec_nanos())
}

/// Parses `90`, `90s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration `{text}` is not like `90s`, `5m`, `1h`"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("duration `{text}`: unit must be s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration `{text}` is out of range"))
}

fn parse_epoch(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return DateTime::from_timestamp(seconds, 0)
            .ok_or(format!("--epoch {text} is out of range"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| format!("--epoch `{text}` is neither RFC 3339 nor epoch seconds"))
}

fn parse_sources(pairs: &[String]) -> Result<SourceNames, String> {
    let mut sources = SourceNames::default();
    for pair in pairs {
        let (dialect, name) = pair
            .split_once('=')
            .ok_or_else(|| format!("--source `{pair}` is not `DIALECT=NAME`"))?;
        let dialect: SimDialect = dialect.trim().parse()?;
        let name = name.trim();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(format!("--source `{pair}`: `{name}` is not a source name"));
        }
        sources.set(dialect, name);
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(argv: &[&str]) -> Result<Mode, String> {
        let cli = Cli::try_parse_from(std::iter::once("simulate").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.args.validate()
    }

    #[test]
    fn test_run_flags() {
        let Mode::Run(run) = parse(&[
            "--calls-per-second",
            "20",
            "--duration",
            "5m",
            "--keep-alive",
            "off",
            "--source",
            "7moor-v2=legacy",
            "--duplicate-rate",
            "0.05",
            "--seed",
            "7",
            "--epoch",
            "2024-06-20T08:00:00Z",
        ])
        .unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run.flows, 6000);
        assert_eq!(run.flow_interval, Some(Duration::from_millis(50)));
        assert!(!run.keep_alive);
        assert_eq!(&*run.sources.get(SimDialect::SevenMoorV2), "legacy");
        assert_eq!(&*run.sources.get(SimDialect::SevenMoorV7), "7moor");
        assert_eq!(run.seed, 7);
        assert_eq!(run.epoch.timestamp(), 1_718_870_400);
    }

    #[test]
    fn test_bad_flags_are_explained() {
        let error = |argv: &[&str]| parse(argv).unwrap_err();
        assert!(error(&["--duplicate-rate", "1.5"]).contains("--duplicate-rate"));
        assert!(error(&["--vendor-mix", "genesys=1"]).contains("genesys"));
        assert!(error(&["--source", "7moor"]).contains("DIALECT=NAME"));
        assert!(error(&["--verify", "--ledger", "l"]).contains("--db"));
        assert!(error(&["--calls-per-second", "0", "--duration", "5s"]).contains("--duration"));
        assert!(error(&["--keep-alive", "maybe"]).contains("maybe"));
        assert!(error(&["--calls", "0"]).contains("0 flows"));
    }

    #[test]
    fn test_verify_flags() {
        let Mode::Verify(verify) = parse(&[
            "--verify",
            "--ledger",
            "l.jsonl",
            "--db",
            "d/callhook.db",
            "--wait-seconds",
            "30",
        ])
        .unwrap() else {
            panic!("not a verify")
        };
        assert_eq!(verify.wait, Duration::from_secs(30));
        assert_eq!(verify.db, PathBuf::from("d/callhook.db"));
    }

    #[test]
    fn test_parse_duration() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("x").is_err());
    }
}

//! `callhook simulate` end to end: validate flags, run (or verify), print the report.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::args::{Mode, RunSettings, SimulateArgs, VerifySettings};
use crate::flow::Flow;
use crate::generate::{Generator, GeneratorConfig};
use crate::ledger::{
    CallLine, Ledger, LedgerError, LedgerHandle, LedgerLine, LedgerWriter, RunLine, LEDGER_VERSION,
};
use crate::load::{
    run_load, LoadError, LoadOptions, NoObserver, Pace, Plan, PushObserver, Report, Target,
};
use crate::schedule::{FlowHook, PlanStats, ScheduleConfig, SimulationPlan};
use crate::verify::{verify, VerifyError, VerifyOptions};

/// Why `callhook simulate` failed.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A flag is wrong.
    #[error("{0}")]
    Args(String),
    /// The load could not start.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The ledger could not be written or read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Verification could not run.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Some pushes were not acknowledged (the report says which classes).
    #[error("{failed} of {sent} pushes were not acknowledged")]
    NotAcknowledged {
        /// Failed pushes.
        failed: u64,
        /// Pushes sent.
        sent: u64,
    },
    /// The database does not match the ledger (the report lists the mismatches).
    #[error("verification failed: {0} mismatch(es)")]
    VerifyFailed(u64),
}

/// What a simulation run reports.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    /// The seed (rerun with it to get the same pushes).
    pub seed: u64,
    /// The vendor clock at the first flow.
    pub epoch: DateTime<Utc>,
    /// The target URL.
    pub target: String,
    /// What was generated.
    pub plan: PlanStats,
    /// What was measured.
    pub load: Report,
}

/// Runs `callhook simulate` with parsed flags.
pub fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    match args.validate().map_err(SimulateError::Args)? {
        Mode::Run(settings) => simulate(&settings),
        Mode::Verify(settings) => run_verify(&settings),
    }
}

fn simulate(settings: &RunSettings) -> Result<(), SimulateError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(SimulateError::Runtime)?;
    let ledger = settings
        .ledger
        .as_deref()
        .map(LedgerWriter::create)
        .transpose()?;
    let handle = ledger.as_ref().map(LedgerWriter::handle);
    let result = runtime.block_on(send_traffic(settings, handle));
    let ledger_lines = ledger.map(LedgerWriter::finish).transpose();
    let report = result?;
    if settings.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        let lines = ledger_lines.as_ref().ok().copied().flatten();
        print_report(&report, settings, lines);
    }
    // The report is printed even when the ledger could not be completed.
    ledger_lines?;
    if report.load.failed > 0 {
        return Err(SimulateError::NotAcknowledged {
            failed: report.load.failed,
            sent: report.load.sent,
        });
    }
    Ok(())
}

async fn send_traffic(
    settings: &RunSettings,
    ledger: Option<LedgerHandle>,
) -> Result<SimulationReport, SimulateError> {
    let target = Target::resolve(&settings.target).await?;
    let hook = ledger.clone().map(|handle| ledger_hook(settings, handle));
    let plan = simulation_plan(settings, target.clone(), hook);
    let stats = plan.stats();
    let options = LoadOptions {
        target,
        connections: settings.connections,
        keep_alive: settings.keep_alive,
        pace: if settings.flow_interval.is_some() {
            Pace::Scheduled
        } else {
            Pace::Unthrottled
        },
        request_timeout: settings.request_timeout,
        progress: std::io::stderr().is_terminal(),
    };
    let observer: Arc<dyn PushObserver> = match ledger {
        Some(handle) => Arc::new(handle),
        None => Arc::new(NoObserver),
    };
    let load = run_load(Plan::new(plan, None), &options, observer).await;
    let plan = stats.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(SimulationReport {
        seed: settings.seed,
        epoch: settings.epoch,
        target: settings.target.clone(),
        plan,
        load,
    })
}

/// The generator and the schedule of a run.
fn simulation_plan(
    settings: &RunSettings,
    target: Target,
    hook: Option<FlowHook>,
) -> SimulationPlan {
    // Unthrottled runs still need a vendor clock: flows 10 ms apart.
    let vendor_interval = settings.flow_interval.unwrap_or(Duration::from_millis(10));
    let generator = Generator::new(GeneratorConfig {
        seed: settings.seed,
        epoch: settings.epoch,
        flow_interval: vendor_interval,
        mix: settings.mix.clone(),
    });
    let schedule = ScheduleConfig {
        flows: settings.flows,
        // Unthrottled, the offsets only order the stream (the dispatcher ignores them); spacing
        // flows on the vendor clock keeps generation lazy, so memory holds only flows in flight.
        flow_interval: vendor_interval,
        flow_spread: settings.flow_spread,
        duplicate_rate: settings.duplicate_rate,
        duplicate_delay_max: settings.duplicate_delay,
        reorder_rate: settings.reorder_rate,
        seed: settings.seed,
    };
    SimulationPlan::new(generator, schedule, settings.sources.clone(), target, hook)
}

/// Writes the run line, and returns the hook that writes each flow's call lines.
fn ledger_hook(settings: &RunSettings, handle: LedgerHandle) -> FlowHook {
    handle.write(LedgerLine::Run(RunLine {
        version: LEDGER_VERSION,
        seed: settings.seed,
        target: settings.target.clone(),
        started_at: Utc::now(),
    }));
    Box::new(move |flow: &Flow, source: &str| {
        for call in CallLine::of_flow(flow, source) {
            handle.write(LedgerLine::Call(call));
        }
    })
}

fn print_report(report: &SimulationReport, settings: &RunSettings, ledger_lines: Option<u64>) {
    let plan = &report.plan;
    let join = |map: &std::collections::BTreeMap<String, u64>| {
        map.iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "simulated    {} flows ({} calls) against {}; seed {}, epoch {}",
        plan.flows,
        plan.calls,
        report.target,
        report.seed,
        report.epoch.to_rfc3339()
    );
    println!("dialects     {}", join(&plan.flows_by_dialect));
    println!("scenarios    {}", join(&plan.flows_by_scenario));
    println!(
        "plan         {} distinct pushes + {} vendor retries; {} flows sent out of order",
        plan.pushes, plan.duplicates, plan.reordered_flows
    );
    println!("{}", report.load);
    if let (Some(path), Some(lines)) = (&settings.ledger, ledger_lines) {
        println!("ledger       {} ({lines} lines)", path.display());
    }
}

fn run_verify(settings: &VerifySettings) -> Result<(), SimulateError> {
    let ledger = Ledger::read(&settings.ledger)?;
    let options = VerifyOptions {
        db: settings.db.clone(),
        wait: settings.wait,
        clock_skew: settings.clock_skew,
    };
    let report = verify(&ledger, &options)?;
    if settings.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "verify       {} against {}",
            settings.ledger.display(),
            settings.db.display()
        );
        println!("{report}");
    }
    if report.passed() {
        Ok(())
    } else {
        Err(SimulateError::VerifyFailed(report.mismatch_count))
    }
}

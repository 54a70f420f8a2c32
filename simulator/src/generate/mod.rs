//! Generators: one module per dialect, each telling call flows the way that vendor does.
//!
//! - [`sevenmoor_v7`]: 7moor v7 JSON (`callStatus`, `dialoutRing`, the `content` link push,
//!   `dialoutHangup`, the incoming ring/hangup pushes without `pushType`, `cdr`,
//!   `mediaFailreason`, `login`/`logout`).
//! - [`sevenmoor_v2`]: 7moor v2 GET query strings (`Ring`, `Ringing`, `Link`, `Hangup` with
//!   `State` and `FileServer`/`RecordFile`, transfers with `refCallSheetId`).
//! - [`coocenter`]: CooCenter JS-object-literal bodies (`dialbegein`, `dialend`, `hangup`,
//!   `extensionstatus`, `ivr`, `cdr`, `cc_cdr`).
//! - [`uincall`]: UinCall JSON (`agentDialout` UP/DN, `callout_process`, `call_process`,
//!   `call_talking`, `call_hangup`, `incoming`, `agentstatus`, `setAgentType`).
//!
//! Determinism: a flow is a pure function of `(seed, epoch, flow interval, mix, index)`; each
//! flow draws from its own generator seeded by `(seed, index)`, so the same arguments give
//! byte-identical pushes.
//!
//! The expected `calls` row of each call is derived from the mapping docs
//! (`normalizer/docs/<vendor>.md`) and the fold rules of `sinks/src/calls_fold.rs`; the
//! tests in `simulator/tests/pipeline.rs` check every scenario of every dialect against the
//! real mapper and the real SQLite sink.

pub mod coocenter;
mod format;
pub mod sevenmoor_v2;
pub mod sevenmoor_v7;
pub mod uincall;

use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::flow::{ExpectedCall, Flow, FlowPush, Scenario, SimDialect, VendorRequest};

/// How often each dialect is picked, by weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorMix {
    weights: Vec<(SimDialect, u32)>,
}

impl VendorMix {
    /// Parses `7moor=40,7moor-v2=20,coocenter=20,uincall=20` (weights, not necessarily summing
    /// to 100; a dialect left out is never picked).
    pub fn parse(text: &str) -> Result<VendorMix, String> {
        let mut weights: Vec<(SimDialect, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not `dialect=weight`"))?;
            let dialect: SimDialect = name.trim().parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight `{weight}` of `{name}` is not a whole number"))?;
            if weights.iter().any(|(seen, _)| *seen == dialect) {
                return Err(format!("dialect `{dialect}` is listed twice"));
            }
            weights.push((dialect, weight));
        }
        let mix = VendorMix { weights };
        if mix.total() == 0 {
            return Err("the vendor mix has no dialect with a weight above 0".to_owned());
        }
        Ok(mix)
    }

    /// Returns a mix with only one dialect.
    pub fn only(dialect: SimDialect) -> VendorMix {
        VendorMix {
            weights: vec![(dialect, 1)],
        }
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|(_, w)| u64::from(*w)).sum()
    }

    /// Picks a dialect by weight.
    pub fn pick(&self, rng: &mut StdRng) -> SimDialect {
        let mut ticket = rng.random_range(0..self.total());
        for (dialect, weight) in &self.weights {
            if ticket < u64::from(*weight) {
                return *dialect;
            }
            ticket -= u64::from(*weight);
        }
        unreachable!("the ticket is below the total weight")
    }
}

impl Default for VendorMix {
    /// `7moor=40,7moor-v2=20,coocenter=20,uincall=20`.
    fn default() -> Self {
        VendorMix {
            weights: vec![
                (SimDialect::SevenMoorV7, 40),
                (SimDialect::SevenMoorV2, 20),
                (SimDialect::CooCenter, 20),
                (SimDialect::UinCall, 20),
            ],
        }
    }
}

/// What the generator needs to know.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// The seed; with the other fields it determines every push.
    pub seed: u64,
    /// The vendor clock at flow 0.
    pub epoch: DateTime<Utc>,
    /// How far the vendor clock moves between two flows' starts.
    pub flow_interval: Duration,
    /// The dialect mix.
    pub mix: VendorMix,
}

/// Builds flows by index.
#[derive(Debug, Clone)]
pub struct Generator {
    config: GeneratorConfig,
    run: RunIdentity,
}

/// Per-run vendor constants (accounts, tenants, devices), derived from the seed.
#[derive(Debug, Clone)]
pub(crate) struct RunIdentity {
    pub(crate) sevenmoor_account: String,
    pub(crate) uincall_tenant: String,
    pub(crate) coocenter_mac: String,
}

impl Generator {
    /// Returns a generator for the given configuration.
    pub fn new(config: GeneratorConfig) -> Generator {
        let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5eed_1d3e_0000_0000);
        let run = RunIdentity {
            sevenmoor_account: format!("2{:06}", rng.random_range(0..1_000_000u32)),
            uincall_tenant: format::uuid(&mut rng),
            coocenter_mac: format!(
                "68:69:2e:{:02x}:{:02x}:{:02x}",
                rng.random_range(0..=255u8),
                rng.random_range(0..=255u8),
                rng.random_range(0..=255u8)
            ),
        };
        Generator { config, run }
    }

    /// Returns flow `index`: its dialect from the mix, its scenario from the dialect's weights.
    pub fn flow(&self, index: u64) -> Flow {
        let mut rng = flow_rng(self.config.seed, index);
        let dialect = self.config.mix.pick(&mut rng);
        let scenario = pick_scenario(scenarios(dialect), &mut rng);
        self.build(index, dialect, scenario, rng)
    }

    /// Returns flow `index` with the given dialect and scenario (tests, and replaying one case).
    pub fn flow_with(&self, index: u64, dialect: SimDialect, scenario: Scenario) -> Flow {
        self.build(index, dialect, scenario, flow_rng(self.config.seed, index))
    }

    /// When flow `index` starts on the vendor clock: its pushes come at or after it.
    pub fn flow_start(&self, index: u64) -> DateTime<Utc> {
        let offset = self.config.flow_interval.as_secs_f64() * index as f64;
        self.config.epoch + TimeDelta::milliseconds((offset * 1000.0) as i64)
    }

    fn build(&self, index: u64, dialect: SimDialect, scenario: Scenario, rng: StdRng) -> Flow {
        let start = self.flow_start(index);
        let mut ctx = FlowCtx {
            rng,
            index,
            start,
            run: &self.run,
            calls: Vec::new(),
            pushes: Vec::new(),
        };
        match dialect {
            SimDialect::SevenMoorV7 => sevenmoor_v7::generate(&mut ctx, scenario),
            SimDialect::SevenMoorV2 => sevenmoor_v2::generate(&mut ctx, scenario),
            SimDialect::CooCenter => coocenter::generate(&mut ctx, scenario),
            SimDialect::UinCall => uincall::generate(&mut ctx, scenario),
        }
        Flow {
            index,
            dialect,
            scenario,
            calls: ctx.calls,
            pushes: ctx.pushes,
        }
    }
}

/// Returns the scenarios a dialect can tell, with their weights.
pub fn scenarios(dialect: SimDialect) -> &'static [(Scenario, u32)] {
    match dialect {
        SimDialect::SevenMoorV7 => sevenmoor_v7::SCENARIOS,
        SimDialect::SevenMoorV2 => sevenmoor_v2::SCENARIOS,
        SimDialect::CooCenter => coocenter::SCENARIOS,
        SimDialect::UinCall => uincall::SCENARIOS,
    }
}

fn pick_scenario(weights: &[(Scenario, u32)], rng: &mut StdRng) -> Scenario {
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut ticket = rng.random_range(0..total);
    for (scenario, weight) in weights {
        if ticket < *weight {
            return *scenario;
        }
        ticket -= weight;
    }
    unreachable!("the ticket is below the total weight")
}

fn flow_rng(seed: u64, index: u64) -> StdRng {
    // SplitMix64-style mixing so that neighbouring indexes get unrelated streams.
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The state of one flow being generated: its random stream, clock and output.
pub(crate) struct FlowCtx<'a> {
    pub(crate) rng: StdRng,
    pub(crate) index: u64,
    pub(crate) start: DateTime<Utc>,
    pub(crate) run: &'a RunIdentity,
    calls: Vec<ExpectedCall>,
    pushes: Vec<FlowPush>,
}

impl FlowCtx<'_> {
    /// Returns the flow start plus `seconds`.
    pub(crate) fn at(&self, seconds: i64) -> DateTime<Utc> {
        self.start + TimeDelta::seconds(seconds)
    }

    /// Returns the flow start plus `base` plus a whole number of seconds in `low..=high`.
    pub(crate) fn at_random(&mut self, base: i64, low: i64, high: i64) -> DateTime<Utc> {
        let extra = self.secs(low, high);
        self.at(base + extra)
    }

    /// Returns a whole number of seconds in `low..=high`.
    pub(crate) fn secs(&mut self, low: i64, high: i64) -> i64 {
        self.rng.random_range(low..=high)
    }

    /// Returns true with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Returns one of `items`.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    /// Records a call the flow creates.
    pub(crate) fn expect(&mut self, call: ExpectedCall) {
        self.calls.push(call);
    }

    /// Appends a push (in send order).
    pub(crate) fn push(
        &mut self,
        call_id: Option<&str>,
        vendor_time: DateTime<Utc>,
        label: &str,
        request: VendorRequest,
    ) {
        self.pushes.push(FlowPush {
            call_id: call_id.map(str::to_owned),
            vendor_time,
            label: label.to_owned(),
            request,
        });
    }
}

/// Returns UTC+08:00, the zone of every vendor's zone-less local times.
pub(crate) fn china() -> FixedOffset {
    callhook_normalizer::china_offset()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(seed: u64) -> Generator {
        Generator::new(GeneratorConfig {
            seed,
            epoch: DateTime::from_timestamp(1_718_870_400, 0).unwrap(),
            flow_interval: Duration::from_millis(100),
            mix: VendorMix::default(),
        })
    }

    #[test]
    fn test_mix_parse_and_errors() {
        let mix = VendorMix::parse("7moor=40, 7moor-v2=20,coocenter=20,uincall=20").unwrap();
        assert_eq!(mix, VendorMix::default());
        assert!(VendorMix::parse("7moor=0").is_err());
        assert!(VendorMix::parse("7moor=1,7moor=2").is_err());
        assert!(VendorMix::parse("genesys=1").is_err());
        assert!(VendorMix::parse("7moor").is_err());
        assert!(VendorMix::parse("7moor=x").is_err());
    }

    #[test]
    fn test_mix_follows_weights() {
        let mix = VendorMix::parse("7moor=3,uincall=1").unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let picks: Vec<SimDialect> = (0..4000).map(|_| mix.pick(&mut rng)).collect();
        let moor = picks
            .iter()
            .filter(|d| **d == SimDialect::SevenMoorV7)
            .count();
        assert!((2800..3200).contains(&moor), "{moor}");
        assert!(picks
            .iter()
            .all(|d| matches!(d, SimDialect::SevenMoorV7 | SimDialect::UinCall)));
    }

    #[test]
    fn test_same_seed_same_bytes_other_seed_other_ids() {
        let first: Vec<_> = (0..50).map(|i| generator(7).flow(i).pushes).collect();
        let again: Vec<_> = (0..50).map(|i| generator(7).flow(i).pushes).collect();
        let other: Vec<_> = (0..50).map(|i| generator(8).flow(i).pushes).collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn test_every_scenario_of_every_dialect_builds_a_flow() {
        let generator = generator(1);
        for dialect in SimDialect::ALL {
            for (scenario, _) in scenarios(dialect) {
                let flow = generator.flow_with(3, dialect, *scenario);
                assert!(!flow.pushes.is_empty(), "{dialect} {scenario:?}");
                if *scenario == Scenario::AgentSession {
                    assert!(flow.calls.is_empty());
                } else {
                    assert!(!flow.calls.is_empty(), "{dialect} {scenario:?}");
                }
                for call in &flow.calls {
                    assert!(
                        flow.pushes
                            .iter()
                            .any(|p| p.call_id.as_deref() == Some(&call.call_id)),
                        "{dialect} {scenario:?}: call without pushes"
                    );
                }
            }
        }
    }
}

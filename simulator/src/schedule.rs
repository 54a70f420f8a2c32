//! From flows to a timed stream of pushes: pacing, vendor retries (duplicates) and reordering.
//!
//! Flow `i` starts at `i × flow_interval`; its pushes take evenly spaced slots over
//! `flow_spread` in the vendor's order, except in a reordered flow (probability
//! `reorder_rate`), whose pushes take the slots in a shuffled order. Each push is, with
//! probability `duplicate_rate`, sent a second time, byte for byte, up to
//! `duplicate_delay_max` later (a vendor retry; it may overtake nothing or everything).
//!
//! Flows are generated lazily, just before their first push is due, so memory holds only the
//! flows in flight, whatever the run's length. The stream is a pure function of the generator
//! and this configuration (same seed, same stream).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::flow::{Flow, SimDialect};
use crate::generate::Generator;
use crate::load::{Push, ScheduledPush, Target};

/// The simulator's identity of one push (what the ledger records besides the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMeta {
    /// The flow's index.
    pub flow: u64,
    /// The push's position in its flow (vendor order).
    pub seq: u32,
    /// The dialect.
    pub dialect: SimDialect,
    /// The source it is pushed to.
    pub source: Arc<str>,
    /// The call it belongs to (`None`: agent-only pushes).
    pub call_id: Option<String>,
}

/// How flows become a timed stream.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// How many flows.
    pub flows: u64,
    /// Between two flows' starts.
    pub flow_interval: Duration,
    /// Over how long one flow's pushes are spread.
    pub flow_spread: Duration,
    /// Fraction of pushes sent twice.
    pub duplicate_rate: f64,
    /// Longest delay of the second sending.
    pub duplicate_delay_max: Duration,
    /// Fraction of flows whose pushes are sent in a shuffled order.
    pub reorder_rate: f64,
    /// Seeds the schedule's own random stream (duplicates, delays, shuffles).
    pub seed: u64,
}

/// The source each dialect is pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceNames {
    names: BTreeMap<SimDialect, Arc<str>>,
}

impl Default for SourceNames {
    /// `7moor` (v7 and v2), `coocenter`, `uincall`: the default config's sources.
    fn default() -> Self {
        SourceNames {
            names: SimDialect::ALL
                .into_iter()
                .map(|dialect| (dialect, Arc::from(dialect.default_source())))
                .collect(),
        }
    }
}

impl SourceNames {
    /// Sets the source of a dialect.
    pub fn set(&mut self, dialect: SimDialect, source: &str) {
        self.names.insert(dialect, Arc::from(source));
    }

    /// Returns the source of a dialect.
    pub fn get(&self, dialect: SimDialect) -> Arc<str> {
        self.names
            .get(&dialect)
            .cloned()
            .unwrap_or_else(|| Arc::from(dialect.default_source()))
    }
}

/// What the schedule produced (for the report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanStats {
    /// Flows generated.
    pub flows: u64,
    /// Calls the flows create.
    pub calls: u64,
    /// Distinct pushes.
    pub pushes: u64,
    /// Second sendings (vendor retries).
    pub duplicates: u64,
    /// Flows sent out of order.
    pub reordered_flows: u64,
    /// Flows per dialect.
    pub flows_by_dialect: BTreeMap<String, u64>,
    /// Flows per scenario.
    pub flows_by_scenario: BTreeMap<String, u64>,
}

/// Called with each flow as it is generated (the ledger records its calls).
pub type FlowHook = Box<dyn FnMut(&Flow, &str) + Send>;

/// The lazily generated, time-ordered stream of a simulation's pushes.
pub struct SimulationPlan {
    generator: Generator,
    config: ScheduleConfig,
    sources: SourceNames,
    target: Target,
    next_flow: u64,
    heap: BinaryHeap<Reverse<Entry>>,
    order: u64,
    stats: Arc<Mutex<PlanStats>>,
    hook: Option<FlowHook>,
}

struct Entry {
    at: Duration,
    order: u64,
    scheduled: ScheduledPush,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl SimulationPlan {
    /// Returns the plan; `stats` fills in as flows are generated.
    pub fn new(
        generator: Generator,
        config: ScheduleConfig,
        sources: SourceNames,
        target: Target,
        hook: Option<FlowHook>,
    ) -> SimulationPlan {
        SimulationPlan {
            generator,
            config,
            sources,
            target,
            next_flow: 0,
            heap: BinaryHeap::new(),
            order: 0,
            stats: Arc::new(Mutex::new(PlanStats::default())),
            hook,
        }
    }

    /// Returns the shared statistics.
    pub fn stats(&self) -> Arc<Mutex<PlanStats>> {
        Arc::clone(&self.stats)
    }

    /// Returns how many flows have been generated so far.
    pub fn flows_generated(&self) -> u64 {
        self.next_flow
    }

    fn flow_start(&self, index: u64) -> Duration {
        self.config.flow_interval.mul_f64(index as f64)
    }

    fn add_flow(&mut self, index: u64) {
        let flow = self.generator.flow(index);
        let source = self.sources.get(flow.dialect);
        let mut rng =
            StdRng::seed_from_u64(self.config.seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let count = flow.pushes.len();
        let mut slots: Vec<usize> = (0..count).collect();
        let reordered = count > 1 && rng.random_bool(self.config.reorder_rate);
        if reordered {
            slots.shuffle(&mut rng);
            if slots.iter().enumerate().all(|(slot, push)| slot == *push) {
                slots.swap(0, 1);
            }
        }
        let start = self.flow_start(index);
        let step = self.config.flow_spread / u32::try_from(count.max(2) - 1).unwrap_or(u32::MAX);
        let mut duplicates = 0;
        for (slot, push_index) in slots.into_iter().enumerate() {
            let at = start + step * u32::try_from(slot).unwrap_or(u32::MAX);
            let Some(push) = self.build_push(&flow, push_index, &source) else {
                continue;
            };
            let push = Arc::new(push);
            self.enqueue(at, Arc::clone(&push), 0);
            if rng.random_bool(self.config.duplicate_rate) {
                let max_ms =
                    u64::try_from(self.config.duplicate_delay_max.as_millis()).unwrap_or(u64::MAX);
                let delay = Duration::from_millis(rng.random_range(0..=max_ms));
                self.enqueue(at + delay, push, 1);
                duplicates += 1;
            }
        }
        self.record(&flow, reordered, duplicates);
        if let Some(hook) = self.hook.as_mut() {
            hook(&flow, &source);
        }
    }

    fn build_push(&self, flow: &Flow, index: usize, source: &Arc<str>) -> Option<Push> {
        let flow_push = &flow.pushes[index];
        let request = &flow_push.request;
        let method = if request.method == "GET" {
            Method::GET
        } else {
            Method::POST
        };
        let path = self.target.hook_path(source, request.query.as_deref());
        let body = Bytes::from(request.body.clone());
        match Push::new(method, &path, request.content_type.as_deref(), body) {
            Ok(mut push) => {
                push.meta = Some(PushMeta {
                    flow: flow.index,
                    seq: u32::try_from(index).unwrap_or(u32::MAX),
                    dialect: flow.dialect,
                    source: Arc::clone(source),
                    call_id: flow_push.call_id.clone(),
                });
                Some(push)
            }
            Err(error) => {
                tracing::error!(error = %error, flow = flow.index, push = index, "generated push is not a valid request; skipped");
                None
            }
        }
    }

    fn enqueue(&mut self, at: Duration, push: Arc<Push>, copy: u32) {
        self.order += 1;
        self.heap.push(Reverse(Entry {
            at,
            order: self.order,
            scheduled: ScheduledPush { at, push, copy },
        }));
    }

    fn record(&self, flow: &Flow, reordered: bool, duplicates: u64) {
        let Ok(mut stats) = self.stats.lock() else {
            return;
        };
        stats.flows += 1;
        stats.calls += flow.calls.len() as u64;
        stats.pushes += flow.pushes.len() as u64;
        stats.duplicates += duplicates;
        stats.reordered_flows += u64::from(reordered);
        *stats
            .flows_by_dialect
            .entry(flow.dialect.as_str().to_owned())
            .or_insert(0) += 1;
        *stats
            .flows_by_scenario
            .entry(flow.scenario.as_str().to_owned())
            .or_insert(0) += 1;
    }
}

impl Iterator for SimulationPlan {
    type Item = ScheduledPush;

    fn next(&mut self) -> Option<ScheduledPush> {
        // Every push of a flow is due at or after the flow's start, so generating each flow
        // before the heap's head passes its start keeps the stream in time order.
        while self.next_flow < self.config.flows {
            let due = self.flow_start(self.next_flow);
            if self.heap.peek().is_some_and(|Reverse(head)| head.at < due) {
                break;
            }
            self.add_flow(self.next_flow);
            self.next_flow += 1;
        }
        self.heap.pop().map(|Reverse(entry)| entry.scheduled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{GeneratorConfig, VendorMix};

    fn plan(flows: u64, duplicate_rate: f64, reorder_rate: f64) -> SimulationPlan {
        let generator = Generator::new(GeneratorConfig {
            seed: 11,
            epoch: chrono::DateTime::from_timestamp(1_718_870_400, 0).unwrap(),
            flow_interval: Duration::from_millis(10),
            mix: VendorMix::default(),
        });
        let config = ScheduleConfig {
            flows,
            flow_interval: Duration::from_millis(10),
            flow_spread: Duration::from_millis(500),
            duplicate_rate,
            duplicate_delay_max: Duration::from_millis(300),
            reorder_rate,
            seed: 11,
        };
        let target = Target::from_addr("127.0.0.1:9".parse().unwrap());
        SimulationPlan::new(generator, config, SourceNames::default(), target, None)
    }

    #[test]
    fn test_stream_is_time_ordered_and_complete() {
        let plan = plan(200, 0.0, 0.0);
        let stats = plan.stats();
        let pushes: Vec<ScheduledPush> = plan.collect();
        assert!(pushes.windows(2).all(|pair| pair[0].at <= pair[1].at));
        let stats = stats.lock().unwrap().clone();
        assert_eq!(stats.flows, 200);
        assert_eq!(pushes.len() as u64, stats.pushes);
        assert_eq!(stats.duplicates, 0);
        assert!(stats.flows_by_dialect.len() == 4, "{stats:?}");
    }

    #[test]
    fn test_flows_are_generated_only_when_due() {
        // A million flows 10 ms apart, each spread over 500 ms: the first 100 pushes need
        // only the first flows, not the whole run.
        let mut plan = plan(1_000_000, 0.0, 0.0);
        let first: Vec<ScheduledPush> = plan.by_ref().take(100).collect();
        assert_eq!(first.len(), 100);
        let last_due = first.last().unwrap().at;
        assert!(plan.flows_generated() <= last_due.as_millis() as u64 / 10 + 2);
        assert!(plan.flows_generated() < 200, "{}", plan.flows_generated());
    }

    #[test]
    fn test_duplicates_repeat_the_same_bytes_later() {
        let plan = plan(300, 0.2, 0.0);
        let stats = plan.stats();
        let pushes: Vec<ScheduledPush> = plan.collect();
        let stats = stats.lock().unwrap().clone();
        let copies: Vec<&ScheduledPush> = pushes.iter().filter(|p| p.copy == 1).collect();
        assert_eq!(copies.len() as u64, stats.duplicates);
        let share = stats.duplicates as f64 / stats.pushes as f64;
        assert!((0.15..0.25).contains(&share), "{share}");
        for copy in copies {
            let original = pushes
                .iter()
                .find(|p| p.copy == 0 && Arc::ptr_eq(&p.push, &copy.push))
                .expect("the original");
            assert!(original.at <= copy.at);
            assert!(copy.at - original.at <= Duration::from_millis(300));
        }
    }

    #[test]
    fn test_reordered_flows_send_out_of_vendor_order() {
        let plan = plan(200, 0.0, 0.5);
        let stats = plan.stats();
        let pushes: Vec<ScheduledPush> = plan.collect();
        let mut by_flow: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for push in &pushes {
            let meta = push.push.meta.as_ref().unwrap();
            by_flow.entry(meta.flow).or_default().push(meta.seq);
        }
        let out_of_order = by_flow
            .values()
            .filter(|seqs| seqs.windows(2).any(|pair| pair[0] > pair[1]))
            .count() as u64;
        let stats = stats.lock().unwrap().clone();
        assert_eq!(out_of_order, stats.reordered_flows);
        assert!((60..140).contains(&out_of_order), "{out_of_order}");
    }
}

//! The realistic workload of the normalizer bench: simulated vendor call flows (the
//! simulator's generators, as `callhook simulate` sends them), mostly 7moor v7 calls (ring,
//! link, hangup, cdr and the agent states around them) with the other dialects mixed in, each
//! call unique. Pushes are produced lazily, in flow order, so a million of them never sit in
//! memory at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use callhook_normalizer::{china_offset, SourceContext};
use callhook_rawlog::RawRecord;
use callhook_simulator::flow::SimDialect;
use callhook_simulator::generate::{Generator, GeneratorConfig, VendorMix};
use chrono::{DateTime, TimeDelta, Utc};

/// The dialect weights of the realistic workload.
pub const REALISTIC_MIX: &str = "7moor=70,7moor-v2=10,coocenter=10,uincall=10";

/// Yields raw records of simulated flows, in flow order, with a receive time a little after
/// each push's vendor time.
pub struct Workload {
    generator: Generator,
    next_flow: u64,
    pending: VecDeque<(String, RawRecord)>,
    produced: u64,
    /// Set by [`Workload::interleaved`]: the generated pushes not yet yielded, by receive time.
    arrivals: Option<Arrivals>,
}

/// Pushes of overlapping flows, yielded in receive-time order.
#[derive(Default)]
struct Arrivals {
    /// `(receive time, queue order)` of each push waiting; the order breaks ties stably.
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
    /// The pushes waiting, by queue order.
    records: HashMap<u64, (String, RawRecord)>,
    queued: u64,
    /// When the newest generated flow starts: no push of a later flow comes before.
    newest_start: Option<DateTime<Utc>>,
}

impl Workload {
    /// A workload of the given mix, seed and clock (flows 50 ms apart on the vendor clock).
    pub fn new(mix: &str, seed: u64, epoch: DateTime<Utc>) -> Result<Self, String> {
        let generator = Generator::new(GeneratorConfig {
            seed,
            epoch,
            flow_interval: Duration::from_millis(50),
            mix: VendorMix::parse(mix)?,
        });
        Ok(Workload {
            generator,
            next_flow: 0,
            pending: VecDeque::new(),
            produced: 0,
            arrivals: None,
        })
    }

    /// The realistic workload with calls overlapping as they do in a contact centre: each
    /// flow starts 50 ms after the previous one and lasts as long as its call, and pushes are
    /// yielded in receive-time order across flows, so a call's pushes are spread over the
    /// pushes of the calls in progress meanwhile (thousands, for calls of minutes).
    /// [`Workload::realistic`] yields each flow's pushes together.
    pub fn interleaved(seed: u64) -> Self {
        let mut workload = Workload::realistic(seed);
        workload.arrivals = Some(Arrivals::default());
        workload
    }

    /// The realistic workload ([`REALISTIC_MIX`]).
    pub fn realistic(seed: u64) -> Self {
        let epoch = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        Workload::new(REALISTIC_MIX, seed, epoch).expect("the realistic mix parses")
    }

    /// The sources the workload pushes to, as the normalizer maps them.
    pub fn sources() -> HashMap<String, SourceContext> {
        let mut sources = HashMap::new();
        for dialect in [
            SimDialect::SevenMoorV7,
            SimDialect::SevenMoorV2,
            SimDialect::CooCenter,
            SimDialect::UinCall,
        ] {
            let name = dialect.default_source();
            let mut context = SourceContext::new(name, dialect.normalizer_dialect());
            context.utc_offset = china_offset();
            sources.insert(name.to_owned(), context);
        }
        sources
    }

    /// Returns the next `(partition key, record)`.
    pub fn next_record(&mut self) -> (String, RawRecord) {
        if self.arrivals.is_some() {
            return self.next_arrival();
        }
        loop {
            if let Some(next) = self.pending.pop_front() {
                self.produced += 1;
                return next;
            }
            self.generate_flow();
        }
    }

    /// Queues the pushes of the next flow in `pending`.
    fn generate_flow(&mut self) {
        let flow = self.generator.flow(self.next_flow);
        self.next_flow += 1;
        let source = flow.dialect.default_source();
        for push in flow.pushes {
            let received_at = push.vendor_time + TimeDelta::milliseconds(120);
            let key = push.call_id.clone().unwrap_or_else(|| source.to_owned());
            let record = RawRecord {
                source: source.to_owned(),
                received_at,
                method: push.request.method,
                content_type: push.request.content_type,
                query: push.request.query,
                remote_addr: Some("127.0.0.1:40000".to_owned()),
                request_id: format!("bench-{:016x}", self.produced + self.pending.len() as u64),
                headers: Vec::new(),
                body: Bytes::from(push.request.body),
            };
            self.pending.push_back((key, record));
        }
    }

    /// [`Workload::next_record`] of an interleaved workload: flows are generated until the
    /// newest one starts after the earliest push waiting (a flow's pushes come at or after its
    /// start, and flows start in order), then that push is yielded.
    fn next_arrival(&mut self) -> (String, RawRecord) {
        loop {
            let arrivals = self.arrivals.as_mut().expect("an interleaved workload");
            if let (Some(Reverse((earliest, _))), Some(newest)) =
                (arrivals.heap.peek(), arrivals.newest_start)
            {
                if *earliest < newest {
                    let Reverse((_, order)) = arrivals.heap.pop().expect("peeked");
                    let record = arrivals
                        .records
                        .remove(&order)
                        .expect("every queued push has a record");
                    self.produced += 1;
                    return record;
                }
            }
            let start = self.generator.flow_start(self.next_flow);
            self.generate_flow();
            let arrivals = self.arrivals.as_mut().expect("an interleaved workload");
            for next in self.pending.drain(..) {
                let order = arrivals.queued;
                arrivals.queued += 1;
                arrivals.heap.push(Reverse((next.1.received_at, order)));
                arrivals.records.insert(order, next);
            }
            arrivals.newest_start = Some(start);
        }
    }
}

impl Iterator for Workload {
    type Item = (String, RawRecord);

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_record())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_interleaved_yields_the_same_pushes_in_receive_order_with_calls_overlapping() {
        const PUSHES: usize = 20_000;
        let mut interleaved = Workload::interleaved(7);
        let records: Vec<(String, RawRecord)> =
            (0..PUSHES).map(|_| interleaved.next_record()).collect();
        assert!(records
            .windows(2)
            .all(|pair| pair[0].1.received_at <= pair[1].1.received_at));
        // Every push yielded is one of the flows' pushes, as often as the flows hold it (the
        // simulator re-sends some): twice as many pushes in flow order hold every flow started
        // before the last push yielded.
        let mut together = Workload::realistic(7);
        let mut generated: HashMap<Vec<u8>, i64> = HashMap::new();
        for _ in 0..PUSHES * 2 {
            *generated
                .entry(together.next_record().1.body.to_vec())
                .or_default() += 1;
        }
        for (_, record) in &records {
            let left = generated.entry(record.body.to_vec()).or_default();
            *left -= 1;
            assert!(*left >= 0, "a push yielded more often than generated");
        }
        // Calls overlap: between a call's first and last push come other calls' pushes.
        let mut span: HashMap<&str, (usize, usize)> = HashMap::new();
        for (index, (key, _)) in records.iter().enumerate() {
            span.entry(key.as_str())
                .and_modify(|(_, last)| *last = index)
                .or_insert((index, index));
        }
        let widest = span.values().map(|(first, last)| last - first).max();
        assert!(widest.is_some_and(|widest| widest > 100), "{widest:?}");
    }
}

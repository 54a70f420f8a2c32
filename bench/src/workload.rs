//! The realistic workload of the normalizer bench: simulated vendor call flows (the
//! simulator's generators, as `callhook simulate` sends them), mostly 7moor v7 calls (ring,
//! link, hangup, cdr and the agent states around them) with the other dialects mixed in, each
//! call unique. Pushes are produced lazily, in flow order, so a million of them never sit in
//! memory at once.

use std::collections::{HashMap, VecDeque};
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
        })
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
        loop {
            if let Some(next) = self.pending.pop_front() {
                self.produced += 1;
                return next;
            }
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
    }
}

impl Iterator for Workload {
    type Item = (String, RawRecord);

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_record())
    }
}

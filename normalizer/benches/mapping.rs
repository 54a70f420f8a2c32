//! Mapping throughput per vendor: the golden fixtures' pushes through `map_push`, reported as
//! events/s by criterion (`cargo bench -p callhook-normalizer --bench mapping`). It allocates
//! with mimalloc, as the `callhook` binary does: allocation is a fifth of mapping's time under
//! glibc's malloc, so the system allocator would measure something that does not ship.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so the
//! figure is "events per second of one core" as the target is stated, and stays put when the
//! machine is shared: on a loaded 2-core box wall time swung ±25 % between two runs of the
//! same code, CPU time does not count the time another process held the core.

use std::fs;
use std::path::Path;

use callhook_normalizer::{map_push, Dialect, RawPush, SourceContext};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Case {
    method: String,
    content_type: Option<String>,
    query: Option<String>,
    body: Vec<u8>,
    received_at: chrono::DateTime<chrono::Utc>,
}

fn load(vendor: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(vendor);
    let mut paths: Vec<_> = fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".request.json"))
        .map(|p| {
            let v: Value =
                serde_json::from_str(&fs::read_to_string(&p).expect("read")).expect("json");
            let body = match (&v["body"], &v["body_json"]) {
                (Value::String(text), _) => text.clone().into_bytes(),
                (_, Value::Null) => Vec::new(),
                (_, json) => serde_json::to_vec(json).expect("body_json"),
            };
            Case {
                method: v["method"].as_str().unwrap_or("POST").to_owned(),
                content_type: v["content_type"].as_str().map(str::to_owned),
                query: v["query"].as_str().map(str::to_owned),
                body,
                received_at: v["received_at"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn bench_vendor(c: &mut Criterion<ThreadCpuTime>, vendor: &str, dialect: Dialect) {
    let cases = load(vendor);
    let ctx = SourceContext::new(vendor, dialect);
    let pushes: Vec<RawPush<'_>> = cases
        .iter()
        .map(|case| RawPush {
            method: &case.method,
            content_type: case.content_type.as_deref(),
            query: case.query.as_deref(),
            headers: &[],
            body: &case.body,
            received_at: case.received_at,
        })
        .collect();
    let events: usize = pushes
        .iter()
        .map(|p| map_push(p, &ctx).map(|m| m.events.len()).unwrap_or(0))
        .sum();
    let mut group = c.benchmark_group("map_push");
    group.throughput(Throughput::Elements(events.max(1) as u64));
    group.bench_function(vendor, |b| {
        b.iter(|| {
            for push in &pushes {
                let _ = std::hint::black_box(map_push(push, &ctx));
            }
        })
    });
    // The same-run baseline: parsing the same bodies (or query strings) into a JSON value
    // and serializing one value per event, the least any mapper must do.
    group.bench_function(format!("{vendor}/baseline_parse"), |b| {
        b.iter(|| {
            for push in &pushes {
                let value: serde_json::Value =
                    serde_json::from_slice(push.body).unwrap_or_else(|_| {
                        serde_json::Value::String(push.query.unwrap_or_default().to_owned())
                    });
                let _ = std::hint::black_box(serde_json::to_vec(&value));
            }
        })
    });
    group.finish();
}

fn mapping(c: &mut Criterion<ThreadCpuTime>) {
    bench_vendor(c, "7moor", Dialect::SevenMoor);
    bench_vendor(c, "coocenter", Dialect::CooCenter);
    bench_vendor(c, "uincall", Dialect::UinCall);
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_nanos() -> u64 {
    // SAFETY: `clock_gettime` only writes into the struct we pass.
    let time = unsafe {
        let mut time: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time);
        time
    };
    u64::try_from(time.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(time.tv_nsec).unwrap_or(0)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_nanos().saturating_sub(started)
    }
    fn add(&self, left: &u64, right: &u64) -> u64 {
        left + right
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU shown as µs of CPU, and throughput as elements per CPU-second.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|value| *value /= 1e3);
        "µs cpu"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Elements(count)
            | Throughput::ElementsAndBytes {
                elements: count, ..
            } => count,
            Throughput::Bytes(count)
            | Throughput::BytesDecimal(count)
            | Throughput::Bits(count) => count,
        } as f64;
        values
            .iter_mut()
            .for_each(|value| *value = per_iteration * 1e9 / *value / 1e3);
        "K/cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = mapping
}
criterion_main!(benches);

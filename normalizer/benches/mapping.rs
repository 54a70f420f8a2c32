//! Mapping throughput per vendor: the golden fixtures' pushes through `map_push`, reported as
//! events/s by criterion (`cargo bench -p callhook-normalizer --bench mapping`). It allocates
//! with mimalloc, as the `callhook` binary does: allocation is a fifth of mapping's time under
//! glibc's malloc, so the system allocator would measure something that does not ship.

use std::fs;
use std::path::Path;

use callhook_normalizer::{map_push, Dialect, RawPush, SourceContext};
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

fn bench_vendor(c: &mut Criterion, vendor: &str, dialect: Dialect) {
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

fn mapping(c: &mut Criterion) {
    bench_vendor(c, "7moor", Dialect::SevenMoor);
    bench_vendor(c, "coocenter", Dialect::CooCenter);
    bench_vendor(c, "uincall", Dialect::UinCall);
}

criterion_group!(benches, mapping);
criterion_main!(benches);

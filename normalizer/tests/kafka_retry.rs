//! A batch the SQLite sink refuses is read again, shows as lag and in `/readyz`'s health, and
//! is not produced to Kafka twice. Its own test binary: it reads process-wide gauges.

mod support;

use std::time::{Duration, Instant};

use callhook_sinks::SqliteSinkSettings;
use callhook_testkit::KafkaBroker;
use support::*;

fn gauge(name: &str) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| {
            family
                .get_metric()
                .iter()
                .map(|m| m.get_gauge().get_value())
        })
        .sum()
}

#[test]
fn test_a_refused_batch_is_read_again_shows_as_lag_and_is_not_produced_twice() {
    let broker = KafkaBroker::start();
    create_topics(&broker);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callhook.db");
    let mut sqlite = SqliteSinkSettings::for_path(&db);
    sqlite.busy_timeout = Duration::from_millis(200);
    let (running, health) = start_with(&broker, &sqlite, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge("callhook_normalizer_assigned_partitions") < 3.0 {
        assert!(Instant::now() < deadline, "no assignment");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another writer holds SQLite's write lock: every commit fails (busy) and is retried.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let records = workload();
    produce_raw(&broker, &records);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge("callhook_normalizer_lag_records") < records.len() as f64 || health.check().is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "lag {} health {:?}",
            gauge("callhook_normalizer_lag_records"),
            health.check()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1)); // a few more refused attempts
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    let (ids, _) = expected(&records);
    wait_for(&db, "SELECT COUNT(*) FROM events", ids.len() as i64);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge("callhook_normalizer_lag_records") > 0.0 || health.check().is_err() {
        assert!(Instant::now() < deadline, "lag never went back to 0");
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
    // Kafka confirmed the batch before SQLite refused it: reading it again produced nothing.
    check_topics(&broker, &records);
}

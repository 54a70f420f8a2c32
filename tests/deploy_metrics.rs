//! The deployment files (`docker-compose.yml`, `deploy/`) name only what really exists.
//!
//! No Docker engine runs in CI, so the stack is checked statically, against the real binary:
//! - every PromQL expression of the Grafana dashboard and of the Prometheus rule files parses,
//!   and every metric it selects is exported by a running `callhook` (the embedded `serve`, and
//!   `ingest` and `normalize` with the deploy configs against a real Kafka-protocol broker), with
//!   a name that fits its type (`_bucket`/`_sum`/`_count` of a histogram, the bare name of a
//!   counter or gauge);
//! - every label an expression matches on or aggregates `by` is carried by the series it selects
//!   (or is a target label Prometheus adds: `job`, `instance`);
//! - every Prometheus scrape target is a compose service running callhook whose config listens
//!   on that admin port on all interfaces, and every callhook service is scraped;
//! - Grafana's provisioning points at the paths compose mounts and at the provisioned datasource;
//! - `deploy/callhook/*.toml` pass `callhook check-config`, the compose commands are valid
//!   command lines, and the ingest and normalize configs agree on the cluster, topic and sources.

mod common;
#[path = "deploy_metrics/files.rs"]
mod files;
#[path = "deploy_metrics/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use files::{
    bind_source, callhook_services, compose, dashboard_exprs, read_json, read_yaml, repo_path,
    rule_exprs, rule_files, strings,
};
use promql::{check_exprs, parse_exposition, Family};

#[test]
fn test_prometheus_scrapes_every_callhook_admin_listener_and_nothing_else() {
    let compose = compose();
    let services = callhook_services(&compose);
    assert!(services.len() >= 3, "ingest and two normalizers");
    let prometheus = read_yaml("deploy/prometheus/prometheus.yml");
    let mut scraped = BTreeSet::new();
    for job in prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        let job_name = job["job_name"].as_str().expect("job_name");
        assert_eq!(
            job["metrics_path"].as_str().unwrap_or("/metrics"),
            "/metrics"
        );
        for static_config in job["static_configs"].as_sequence().expect("static_configs") {
            for target in strings(&static_config["targets"]) {
                let (host, port) = target.rsplit_once(':').expect("host:port");
                let service = services
                    .iter()
                    .find(|service| service.name == host)
                    .unwrap_or_else(|| panic!("job `{job_name}` scrapes `{target}`, which is no callhook service of docker-compose.yml"));
                let admin = service.address("--admin-listen", "admin_listen");
                assert_eq!(
                    port,
                    admin.port().to_string(),
                    "job `{job_name}` scrapes `{target}`, but `{}` ({}) has its admin listener on {admin}",
                    service.name,
                    service.config_file
                );
                assert!(
                    admin.ip().is_unspecified(),
                    "`{}` admin listener {admin} is unreachable from the Prometheus container",
                    service.name
                );
                assert!(
                    service.expose.contains(&admin.port().to_string()),
                    "`{}` does not `expose` its admin port {}",
                    service.name,
                    admin.port()
                );
                scraped.insert(host.to_owned());
            }
        }
    }
    for service in &services {
        assert!(
            scraped.contains(&service.name),
            "`{}` is never scraped",
            service.name
        );
    }
}

#[test]
fn test_public_receiver_port_is_published() {
    let compose = compose();
    let ingest = callhook_services(&compose)
        .into_iter()
        .find(|service| service.command.iter().any(|arg| arg == "ingest"))
        .expect("an ingest service");
    let listen = ingest.address("--listen", "listen");
    assert!(listen.ip().is_unspecified(), "ingest listens on {listen}");
    let published = ingest
        .ports
        .iter()
        .any(|port| port.rsplit(':').next() == Some(&listen.port().to_string()));
    assert!(published, "ingest's {listen} is not in {:?}", ingest.ports);
}

#[test]
fn test_deploy_configs_and_commands_are_accepted_by_the_binary() {
    let compose = compose();
    let services = callhook_services(&compose);
    for config_file in services
        .iter()
        .map(|s| &s.config_file)
        .collect::<BTreeSet<_>>()
    {
        let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["check-config", "--config"])
            .arg(repo_path(config_file))
            .output()
            .expect("run check-config");
        assert!(
            output.status.success(),
            "`callhook check-config --config {config_file}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for service in &services {
        // `--help` after the service's own arguments: clap rejects an unknown subcommand or
        // flag before it prints the help, and runs nothing.
        let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(&service.command)
            .arg("--help")
            .output()
            .expect("run callhook --help");
        assert!(
            output.status.success(),
            "`callhook {}` is not a valid command line:\n{}",
            service.command.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The "calls" dashboard reads the provisioned PostgreSQL datasource, which names the compose
/// service the normalizers write. (Its SQL runs against the real schema in
/// tests/e2e_postgres.rs.)
#[test]
fn test_calls_dashboard_reads_the_provisioned_postgres_datasource() {
    let compose = compose();
    let datasources = read_yaml("deploy/grafana/provisioning/datasources/postgres.yml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(
        datasource["type"].as_str(),
        Some("grafana-postgresql-datasource")
    );
    let url = datasource["url"].as_str().expect("datasource url");
    let host = url.split(':').next().expect("host:port");
    assert!(
        !compose["services"][host].is_null(),
        "datasource url {url} names no compose service"
    );
    let normalize = std::fs::read_to_string(repo_path("deploy/callhook/normalize.toml")).unwrap();
    assert!(
        normalize.contains(&format!("@{url}/")),
        "the normalizers do not write the database Grafana reads ({url})"
    );
    let uid = datasource["uid"].as_str().expect("uid");
    let dashboard = read_json("deploy/grafana/dashboards/calls.json");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 4);
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], uid, "panel {}", panel["title"]);
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], uid, "panel {}", panel["title"]);
            assert!(target["rawSql"].is_string(), "panel {}", panel["title"]);
        }
    }
}

#[test]
fn test_grafana_provisioning_matches_the_compose_mounts() {
    let compose = compose();
    let grafana = &compose["services"]["grafana"];
    let prometheus_service = &compose["services"]["prometheus"];
    assert_eq!(
        bind_source(prometheus_service, "/etc/prometheus").as_deref(),
        Some("deploy/prometheus")
    );
    assert!(strings(&prometheus_service["command"])
        .contains(&"--config.file=/etc/prometheus/prometheus.yml".to_owned()));
    for file in rule_files() {
        assert!(repo_path(&file).is_file(), "rule file {file} is missing");
    }
    assert_eq!(
        bind_source(grafana, "/etc/grafana/provisioning").as_deref(),
        Some("deploy/grafana/provisioning")
    );

    let datasources = read_yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"].as_str(), Some("prometheus"));
    let url = datasource["url"].as_str().expect("datasource url");
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split(':').next())
        .expect("http://host:port");
    assert!(
        !compose["services"][host].is_null(),
        "datasource url {url} names no compose service"
    );
    let uid = datasource["uid"].as_str().expect("datasource uid");

    let providers = read_yaml("deploy/grafana/provisioning/dashboards/callhook.yml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert_eq!(
        bind_source(grafana, path).as_deref(),
        Some("deploy/grafana/dashboards"),
        "the dashboard provider reads {path}, where compose does not mount the dashboards"
    );

    let dashboard = read_json("deploy/grafana/dashboards/callhook.json");
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    let mut checked = 0;
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], uid, "panel {}", panel["title"]);
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], uid, "panel {}", panel["title"]);
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} panels");
}

// ---------------------------------------------------------------------------------------------
// The running binary
// ---------------------------------------------------------------------------------------------

const LOCKED_SOURCE: &str = "[sources.locked]\ndialect = \"7moor\"\n[sources.locked.auth]\ntoken = \"deploy-metrics-token-0123\"\n";

/// A reconciled source, so that the reconciliation series exist (at 0; the API address refuses
/// connections, which only counts `unreachable` errors).
const RECONCILED_SOURCE: &str = "[sources.reconciled]\ndialect = \"7moor\"\n[sources.reconciled.reconcile]\nbase_url = \"http://127.0.0.1:1\"\nappkey = \"2000144\"\nsecret = \"sk\"\n";

/// Starts the embedded `callhook serve` and drives a push down every path that creates a
/// lazily labelled series (acknowledged, duplicate, dead letter, 401, 404), then scrapes it.
fn embedded_families(families: &mut BTreeMap<String, Family>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}\n{LOCKED_SOURCE}\n{RECONCILED_SOURCE}",
        common::fixture_config()
    );
    let server = common::Server::start(&dir.path().join("data"), Some(&config));
    let pushes = common::fixture_pushes();
    let mut seen_vendors = BTreeSet::new();
    for push in pushes
        .iter()
        .filter(|p| seen_vendors.insert(p.vendor.clone()))
    {
        let content_type = push.content_type.as_deref();
        let (status, body) = server.request(&push.method, &push.target(), content_type, &push.body);
        assert_eq!(status, 200, "{} {}: {body}", push.vendor, push.case);
    }
    // A vendor retry of the first push: a duplicate.
    let first = &pushes[0];
    let (status, _) = server.request(
        &first.method,
        &first.target(),
        first.content_type.as_deref(),
        &first.body,
    );
    assert_eq!(status, 200);
    // A push no mapper understands: a dead letter.
    let (status, _) = server.request("POST", "/hooks/coocenter", None, b"not a coocenter push");
    assert_eq!(status, 200);
    let (status, _) = server.request("POST", "/hooks/locked", Some("application/json"), b"{}");
    assert_eq!(status, 401);
    let (status, _) = server.request("POST", "/hooks/no-such-source", None, b"{}");
    assert_eq!(status, 404);
    server.wait_until_normalized();
    let (status, text) = server.admin_get("/metrics");
    assert_eq!(status, 200);
    parse_exposition(&text, families);
    assert!(
        common::metric_value(&text, "callhook_normalizer_dead_letters_total").unwrap_or(0.0) >= 1.0,
        "the dead-letter push was not dead-lettered:\n{text}"
    );
    server.terminate();
}

/// A deploy config (`deploy/callhook/<file>`) pointed at the test broker; the listeners and the
/// data directory are overridden on the command line, everything else runs as deployed.
fn deploy_config_for(file: &str, brokers: &str, postgres_url: &str) -> String {
    let text = std::fs::read_to_string(repo_path(file)).expect(file);
    let mut config: toml::Table = toml::from_str(&text).expect(file);
    let log = config["log"].as_table_mut().expect("[log]");
    let kafka = log["kafka"].as_table_mut().expect("[log.kafka]");
    kafka.insert("brokers".into(), brokers.into());
    if let Some(postgres) = config
        .get_mut("sink")
        .and_then(|sink| sink.get_mut("postgres"))
        .and_then(toml::Value::as_table_mut)
    {
        postgres.insert("url".into(), postgres_url.into());
    }
    toml::to_string(&config).expect("toml")
}

/// Runs the deploy configs in Kafka mode against a real broker (`callhook ingest` and
/// `callhook normalize`, as docker-compose.yml does), drives pushes through them, and scrapes
/// both: the spool, Kafka delivery, consumer-group and Kafka-sink metrics exist only there.
fn kafka_mode_families(families: &mut BTreeMap<String, Family>) {
    use common::kafka::KafkaProcess;
    let broker = callhook_testkit::KafkaBroker::start();
    let brokers = broker.bootstrap_servers();
    // The compose stack's normalizers write PostgreSQL too: a real one stands in for it.
    let postgres = callhook_testkit::Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest_config = deploy_config_for("deploy/callhook/ingest.toml", &brokers, &postgres.url());
    let ingest = KafkaProcess::start(
        "ingest",
        "ingest",
        &dir.path().join("ingest"),
        &ingest_config,
    );
    let normalize_config =
        deploy_config_for("deploy/callhook/normalize.toml", &brokers, &postgres.url());
    let normalize = KafkaProcess::start(
        "normalize",
        "normalize",
        &dir.path().join("normalize"),
        &normalize_config,
    );
    // One push per vendor, to the deploy configs' sources (named after their dialects).
    let mut pushes = 0;
    let mut seen_vendors = BTreeSet::new();
    for push in common::fixture_pushes() {
        if push.method != "POST" || !seen_vendors.insert(push.vendor.clone()) {
            continue;
        }
        let (status, body) = ingest.post(&push.vendor, push.content_type.as_deref(), &push.body);
        assert_eq!(status, 200, "{} {}: {body}", push.vendor, push.case);
        pushes += 1;
    }
    let (status, _) = ingest.post("coocenter", None, b"not a coocenter push");
    assert_eq!(status, 200);
    pushes += 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let consumed = normalize
            .metric("callhook_normalizer_records_total")
            .unwrap_or(0.0);
        if consumed >= f64::from(pushes) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the normalizer consumed {consumed} of {pushes} pushes"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for process in [&normalize, &ingest] {
        let (status, text) = process.admin_get("/metrics");
        assert_eq!(status, 200);
        parse_exposition(&text, families);
    }
    assert_eq!(normalize.terminate().code(), Some(0));
    assert_eq!(ingest.terminate().code(), Some(0));
    drop(broker);
}

#[test]
fn test_dashboard_and_rules_query_only_exported_metrics() {
    let mut families = BTreeMap::new();
    embedded_families(&mut families);
    kafka_mode_families(&mut families);
    let mut exprs = dashboard_exprs(&read_json("deploy/grafana/dashboards/callhook.json"));
    let dashboard_count = exprs.len();
    exprs.extend(rule_exprs());
    assert!(
        dashboard_count >= 20,
        "only {dashboard_count} dashboard queries"
    );
    assert!(exprs.len() > dashboard_count, "no alerting rules");
    let (problems, metrics) = check_exprs(&exprs, &families);
    assert!(
        problems.is_empty(),
        "{} problem(s) in the deployment's queries (exported: {:?}):\n{}",
        problems.len(),
        families.keys().collect::<Vec<_>>(),
        problems.join("\n")
    );
    // The panels an SRE needs are there.
    for required in [
        "callhook_ingest_requests_total",
        "callhook_ingest_ack_seconds_bucket",
        "callhook_normalizer_lag_records",
        "callhook_sink_events_total",
        "callhook_normalizer_duplicates_total",
        "callhook_normalizer_dead_letters_total",
        "callhook_sink_commit_seconds_bucket",
        "callhook_rawlog_append_seconds_bucket",
        "callhook_rawlog_batch_records_bucket",
        "callhook_rawlog_spool_in_use",
        "callhook_rawlog_spool_records",
        "callhook_rawlog_kafka_delivery_seconds_bucket",
        "callhook_normalizer_assigned_partitions",
    ] {
        assert!(metrics.contains(required), "no query uses `{required}`");
    }
}

/// The receiver and the normalizers must agree on the cluster, the raw topic and the sources
/// (a normalizer maps a push with the dialect of the source it came in on).
#[test]
fn test_ingest_and_normalize_configs_agree() {
    let compose = compose();
    let services = callhook_services(&compose);
    let configs: BTreeMap<&str, &toml::Table> = services
        .iter()
        .map(|s| (s.config_file.as_str(), &s.config))
        .collect();
    assert!(
        configs.len() >= 2,
        "ingest and normalize configs: {configs:?}"
    );
    let shared = |config: &toml::Table| {
        let kafka = &config["log"]["kafka"];
        (
            config["log"]["kind"].clone(),
            kafka["brokers"].clone(),
            kafka["raw_topic"].clone(),
            config.get("sources").cloned(),
        )
    };
    let (first_file, first) = configs.iter().next().expect("a config");
    for (file, config) in &configs {
        assert_eq!(
            shared(config),
            shared(first),
            "{file} and {first_file} disagree on log kind, brokers, raw topic or sources"
        );
    }
    assert_eq!(shared(first).0.as_str(), Some("kafka"));
    let brokers = shared(first).1;
    let host = brokers
        .as_str()
        .and_then(|b| b.split(':').next())
        .expect("brokers");
    assert!(
        !compose["services"][host].is_null(),
        "brokers `{brokers}` names no compose service"
    );
}

/// Every family the alerts compute `increase()` over is exported from the start, with every
/// known label set at 0: otherwise the first occurrence after a start is invisible to them.
#[test]
fn test_alerted_families_exist_at_zero_before_any_push() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}\n{LOCKED_SOURCE}\n{RECONCILED_SOURCE}",
        common::fixture_config()
    );
    let server = common::Server::start(&dir.path().join("data"), Some(&config));
    let (status, text) = server.admin_get("/metrics");
    assert_eq!(status, 200);
    let zero = |series: &str| {
        assert_eq!(
            common::metric_series(&text, series),
            Some(0.0),
            "`{series}` is not exported at 0 before any push"
        );
    };
    for source in ["7moor", "coocenter", "uincall", "locked"] {
        for reason in [
            "too_deep",
            "unparseable_body",
            "mapper_panic",
            "crashed_normalizer",
        ] {
            zero(&format!(
                "callhook_normalizer_dead_letters_total{{reason=\"{reason}\",source=\"{source}\"}}"
            ));
        }
        zero(&format!(
            "callhook_normalizer_records_total{{outcome=\"duplicate\",source=\"{source}\"}}"
        ));
        zero(&format!(
            "callhook_ingest_rejected_total{{reason=\"body_too_large\",source=\"{source}\"}}"
        ));
        zero(&format!(
            "callhook_ingest_auth_failures_total{{reason=\"bad_token\",source=\"{source}\"}}"
        ));
    }
    zero("callhook_ingest_rejected_total{reason=\"unknown_source\",source=\"_unknown\"}");
    zero("callhook_sink_dead_letters_total{reason=\"too_deep\",sink=\"sqlite\"}");
    zero("callhook_sink_duplicates_total{sink=\"sqlite\"}");
    zero("callhook_normalizer_duplicates_total{stage=\"cache\"}");
    zero("callhook_normalizer_duplicates_total{stage=\"store\"}");
    zero("callhook_normalizer_restarts_total");
    let up = ["starting", "running"].map(|state| {
        common::metric_series(
            &text,
            &format!("callhook_normalizer_state{{state=\"{state}\"}}"),
        )
    });
    assert!(
        up.contains(&Some(1.0)),
        "the normalizer is neither starting nor running: {up:?}"
    );
    server.terminate();
}

/// Prometheus's own tool accepts the exposition and the alert rules, and the rules behave as
/// `deploy/prometheus/alerts.test.yml` says on sample series (e.g. a dead-letter series that
/// starts at 0 fires the alert; one that appears with its first dead letter would not).
#[test]
fn test_promtool_accepts_the_metrics_and_the_rules() {
    let Some(promtool) = tool_on_path("promtool") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI (.ci/run installs Debian's prometheus package)"
        );
        eprintln!("skipped: promtool is not installed (scripts/test installs Debian's `prometheus` package)");
        return;
    };
    let rules = repo_path("deploy/prometheus");
    let output = Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&rules)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::Server::start(&dir.path().join("data"), None);
    let (_, text) = server.admin_get("/metrics");
    server.terminate();
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write as _;
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let output = check.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn tool_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

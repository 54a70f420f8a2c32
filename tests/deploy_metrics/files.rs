//! Reading the deployment files: the compose file, its callhook services, the dashboard's and
//! the rules' PromQL expressions.

use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;

/// Returns a path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Reads a YAML file of the repository.
pub fn read_yaml(relative: &str) -> Yaml {
    let text = std::fs::read_to_string(repo_path(relative)).expect(relative);
    serde_yaml::from_str(&text).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// Reads a JSON file of the repository.
pub fn read_json(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path(relative)).expect(relative);
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

// ---------------------------------------------------------------------------------------------
// What the dashboard and the rules query
// ---------------------------------------------------------------------------------------------

/// Every PromQL expression of the dashboard (panels, nested rows, template queries), with where
/// it is.
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel `{title}`"), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = &variable["query"];
        if let Some(expr) = query.as_str().or_else(|| query["query"].as_str()) {
            out.push((format!("variable `{}`", variable["name"]), expr.to_owned()));
        }
    }
    out
}

/// The rule files `prometheus.yml` loads, as repo paths (`/etc/prometheus` is `deploy/prometheus`).
pub fn rule_files() -> Vec<String> {
    let config = read_yaml("deploy/prometheus/prometheus.yml");
    let files = config["rule_files"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    files
        .iter()
        .map(|file| {
            let path = file.as_str().expect("rule file path");
            let relative = path
                .strip_prefix("/etc/prometheus/")
                .unwrap_or_else(|| panic!("rule file `{path}` is not under /etc/prometheus"));
            format!("deploy/prometheus/{relative}")
        })
        .collect()
}

pub fn rule_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in rule_files() {
        let rules = read_yaml(&file);
        for group in rules["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .unwrap_or("?");
                let expr = rule["expr"].as_str().expect("rule expr");
                out.push((format!("{file} rule `{name}`"), expr.to_owned()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The compose file, Prometheus's targets, Grafana's provisioning
// ---------------------------------------------------------------------------------------------

/// The compose file with YAML merge keys (`<<: *callhook`) applied.
pub fn compose() -> Yaml {
    let mut compose = read_yaml("docker-compose.yml");
    compose.apply_merge().expect("merge keys");
    compose
}

/// Returns a YAML sequence of strings or numbers as strings (empty when absent).
pub fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|item| match item {
            Yaml::Number(number) => number.to_string(),
            other => other.as_str().expect("a string").to_owned(),
        })
        .collect()
}

/// The repo path bind-mounted at `container_path` in a service, if any.
pub fn bind_source(service: &Yaml, container_path: &str) -> Option<String> {
    strings(&service["volumes"]).into_iter().find_map(|volume| {
        let mut parts = volume.split(':');
        let (source, target) = (parts.next()?, parts.next()?);
        let source = source.strip_prefix("./")?;
        (target == container_path).then(|| source.to_owned())
    })
}

/// A callhook service of the compose file: its command and the config file it runs with.
pub struct CallhookService {
    pub name: String,
    pub command: Vec<String>,
    pub config_file: String,
    pub config: toml::Table,
    pub expose: Vec<String>,
    pub ports: Vec<String>,
}

impl CallhookService {
    /// The value of a `--flag` in the command, else the config key, as an address.
    pub fn address(&self, flag: &str, key: &str) -> std::net::SocketAddr {
        let from_flag = self
            .command
            .iter()
            .position(|arg| arg == flag)
            .map(|at| self.command[at + 1].clone());
        let text = from_flag
            .or_else(|| {
                self.config
                    .get(key)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("service `{}` sets neither `{flag}` nor `{key}`", self.name));
        text.parse().expect("a socket address")
    }
}

/// Every service built from this repo (the callhook image).
pub fn callhook_services(compose: &Yaml) -> Vec<CallhookService> {
    let services = compose["services"].as_mapping().expect("services");
    let mut found = Vec::new();
    for (name, service) in services {
        let name = name.as_str().expect("service name").to_owned();
        if service["build"].is_null() && service["image"].as_str() != Some("callhook:local") {
            continue;
        }
        let command = strings(&service["command"]);
        let at = command.iter().position(|arg| arg == "--config");
        let container_path = at
            .map(|at| command[at + 1].clone())
            .unwrap_or_else(|| panic!("service `{name}` runs without `--config`"));
        let config_file = bind_source(service, &container_path)
            .unwrap_or_else(|| panic!("service `{name}`: nothing mounted at `{container_path}`"));
        let text = std::fs::read_to_string(repo_path(&config_file)).expect(&config_file);
        found.push(CallhookService {
            config: toml::from_str(&text).expect(&config_file),
            name,
            command,
            config_file,
            expose: strings(&service["expose"]),
            ports: strings(&service["ports"]),
        });
    }
    found
}

//! Golden tests: every `fixtures/<vendor>/<case>.request.json` is a push as the vendor sends it
//! (method, content type, query, body); its `<case>.expected.json` is the mapping, reviewed by
//! eye. Every event is also validated against the JSON Schema. `UPDATE_GOLDEN=1` rewrites the
//! expected files (review every rewrite before committing).

use std::fs;
use std::path::{Path, PathBuf};

use callhook_normalizer::{map_push, Dialect, RawPush, SourceContext};
use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// A fixture request: the push exactly as the vendor sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureRequest {
    /// What this case shows (for the reviewer).
    #[allow(dead_code)]
    description: String,
    source: FixtureSource,
    method: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// The exact body text (use this for JS literals and form bodies).
    #[serde(default)]
    body: Option<String>,
    /// A JSON body, serialized compactly before mapping.
    #[serde(default)]
    body_json: Option<Value>,
    received_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureSource {
    name: String,
    dialect: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    utc_offset: Option<String>,
}

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn request_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut vendors: Vec<PathBuf> = fs::read_dir(fixture_root())
        .expect("fixtures folder")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_dir())
        .collect();
    vendors.sort();
    for vendor in vendors {
        let mut cases: Vec<PathBuf> = fs::read_dir(&vendor)
            .expect("vendor folder")
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| path.to_string_lossy().ends_with(".request.json"))
            .collect();
        cases.sort();
        files.extend(cases);
    }
    files
}

fn context(source: &FixtureSource) -> SourceContext {
    let dialect = Dialect::from_name(&source.dialect).expect("fixture dialect");
    let mut ctx = SourceContext::new(&source.name, dialect);
    ctx.account = source.account.clone();
    ctx.redact_params = vec!["token".to_owned()];
    if let Some(offset) = &source.utc_offset {
        ctx.utc_offset = offset.parse::<FixedOffset>().expect("fixture utc_offset");
    }
    ctx
}

fn run_case(request: &FixtureRequest) -> Value {
    let body = match (&request.body, &request.body_json) {
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(value)) => serde_json::to_vec(value).expect("body_json"),
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => panic!("a fixture has `body` or `body_json`, not both"),
    };
    let push = RawPush {
        method: &request.method,
        content_type: request.content_type.as_deref(),
        query: request.query.as_deref(),
        headers: &request.headers,
        body: &body,
        received_at: request.received_at,
    };
    match map_push(&push, &context(&request.source)) {
        Ok(mapped) => json!({"dedupe_key": mapped.dedupe_key, "events": mapped.events}),
        Err(error) => json!({"error": {"reason": error.reason(), "message": error.to_string()}}),
    }
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(callhook_schemas::JSON_SCHEMA_V1).expect("schema json");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

fn line_diff(expected: &str, actual: &str) -> String {
    let expected_lines: Vec<&str> = expected.lines().collect();
    let actual_lines: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for index in 0..expected_lines.len().max(actual_lines.len()) {
        let (e, a) = (expected_lines.get(index), actual_lines.get(index));
        if e != a {
            out.push_str(&format!(
                "line {}:\n  - {}\n  + {}\n",
                index + 1,
                e.unwrap_or(&""),
                a.unwrap_or(&"")
            ));
        }
    }
    out
}

#[test]
fn test_golden_fixtures() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let validator = validator();
    let files = request_files();
    assert!(
        !files.is_empty(),
        "no fixtures found under {}",
        fixture_root().display()
    );
    let mut failures = Vec::new();
    for request_path in &files {
        let text = fs::read_to_string(request_path).expect("read request");
        let request: FixtureRequest = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", request_path.display()));
        let actual = run_case(&request);
        for event in actual["events"].as_array().into_iter().flatten() {
            let errors: Vec<String> = validator
                .iter_errors(event)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            if !errors.is_empty() {
                failures.push(format!(
                    "{}: schema: {}",
                    request_path.display(),
                    errors.join("; ")
                ));
            }
        }
        let actual_text = serde_json::to_string_pretty(&actual).expect("pretty") + "\n";
        let expected_path = PathBuf::from(
            request_path
                .to_string_lossy()
                .replace(".request.json", ".expected.json"),
        );
        if update {
            fs::write(&expected_path, &actual_text).expect("write expected");
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual_text => {}
            Ok(expected) => failures.push(format!(
                "{}:\n{}",
                expected_path.display(),
                line_diff(&expected, &actual_text)
            )),
            Err(_) => failures.push(format!(
                "{}: missing (run with UPDATE_GOLDEN=1)",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn test_mapping_is_deterministic() {
    for request_path in request_files() {
        let request: FixtureRequest =
            serde_json::from_str(&fs::read_to_string(&request_path).unwrap()).unwrap();
        assert_eq!(
            run_case(&request),
            run_case(&request),
            "{}",
            request_path.display()
        );
    }
}

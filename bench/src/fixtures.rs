//! A realistic vendor mix for the normalizer bench: the golden fixtures
//! (`normalizer/fixtures/<vendor>/*.request.json`), replayed in rounds with their ids made
//! unique per round.
//!
//! The ids of a fixture are the strings its expected events name as call ids, parent call ids,
//! correlation values and vendor `*id*` fields (and, for pushes with no call, the agent
//! number). In round `r` each id is replaced, wherever it stands alone in the body or query, by
//! a string of the same shape (digits stay digits, hex stays hex, punctuation stays), derived
//! from `(id, r)` — so the pushes of one call still share a call id within a round, and no
//! round repeats another's dedupe keys. A fixture is kept only if two rewritten rounds map to
//! the same event types as the original and to distinct dedupe keys; fixtures that map to an
//! error stay in the mix unchanged (each becomes a dead letter, as it would in production).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use callhook_normalizer::{map_push, Dialect, RawPush, SourceContext};
use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where the golden fixtures live in this repository.
pub fn default_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../normalizer/fixtures")
}

#[derive(Deserialize)]
struct RequestFile {
    source: SourceFile,
    method: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_json: Option<Value>,
    received_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct SourceFile {
    name: String,
    dialect: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    utc_offset: Option<String>,
}

/// One fixture push and the ids rewritten per round.
#[derive(Debug, Clone)]
pub struct FixturePush {
    /// `<vendor>/<case>`.
    pub name: String,
    /// The source it arrives on.
    pub source: String,
    /// `GET` or `POST`.
    pub method: String,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The query string, if any.
    pub query: Option<String>,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The body text (fixtures are text).
    pub body: String,
    /// When the fixture says it was received.
    pub received_at: DateTime<Utc>,
    /// Ids replaced per round.
    pub ids: Vec<String>,
    /// Whether the original maps to an error (a dead letter).
    pub dead_letter: bool,
}

impl FixturePush {
    /// Returns `(query, body)` of round `round` (round 0 is the fixture as is).
    pub fn rewrite(&self, round: u64) -> (Option<String>, String) {
        if round == 0 || self.ids.is_empty() {
            return (self.query.clone(), self.body.clone());
        }
        let mut query = self.query.clone();
        let mut body = self.body.clone();
        for id in &self.ids {
            let replacement = reshape(id, round);
            body = replace_standalone(&body, id, &replacement);
            query = query.map(|text| replace_standalone(&text, id, &replacement));
        }
        (query, body)
    }
}

/// The fixtures usable as a mix, with the sources they need.
#[derive(Debug, Clone)]
pub struct VendorMix {
    /// The pushes, in fixture order.
    pub pushes: Vec<FixturePush>,
    /// The mapper's sources by name.
    pub sources: HashMap<String, SourceContext>,
    /// Fixtures found.
    pub fixtures_found: usize,
    /// Fixtures left out because their ids could not be made unique.
    pub fixtures_excluded: Vec<String>,
}

impl VendorMix {
    /// Loads every fixture under `dir` and keeps those that can be replayed with unique ids.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut mix = VendorMix {
            pushes: Vec::new(),
            sources: HashMap::new(),
            fixtures_found: 0,
            fixtures_excluded: Vec::new(),
        };
        for path in request_files(dir)? {
            mix.fixtures_found += 1;
            let (push, context) = load_one(&path)?;
            mix.sources.entry(push.source.clone()).or_insert(context);
            let context = &mix.sources[&push.source];
            match make_unique(push, context) {
                Ok(push) => mix.pushes.push(push),
                Err(name) => mix.fixtures_excluded.push(name),
            }
        }
        anyhow::ensure!(
            !mix.pushes.is_empty(),
            "no usable fixture in {}",
            dir.display()
        );
        Ok(mix)
    }

    /// Returns push number `index` of the endless replay: fixture `index % len` in round
    /// `index / len`, as `(fixture, query, body)`.
    pub fn nth(&self, index: u64) -> (&FixturePush, Option<String>, String) {
        let count = self.pushes.len() as u64;
        let push = &self.pushes[(index % count) as usize];
        let (query, body) = push.rewrite(index / count);
        (push, query, body)
    }
}

fn request_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for vendor in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let vendor = vendor?.path();
        if !vendor.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(&vendor)? {
            let case = case?.path();
            if case.to_string_lossy().ends_with(".request.json") {
                files.push(case);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn load_one(path: &Path) -> anyhow::Result<(FixturePush, SourceContext)> {
    let text = std::fs::read_to_string(path)?;
    let request: RequestFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let body = match (&request.body, &request.body_json) {
        (Some(text), _) => text.clone(),
        (None, Some(value)) => serde_json::to_string(value)?,
        (None, None) => String::new(),
    };
    let dialect = Dialect::from_name(&request.source.dialect)
        .with_context(|| format!("dialect of {}", path.display()))?;
    let mut context = SourceContext::new(&request.source.name, dialect);
    context.account = request.source.account.clone();
    context.redact_params = vec!["token".to_owned()];
    if let Some(offset) = &request.source.utc_offset {
        context.utc_offset = offset
            .parse::<FixedOffset>()
            .map_err(|_| anyhow::anyhow!("utc_offset of {}", path.display()))?;
    }
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let vendor = path
        .parent()
        .and_then(Path::file_name)
        .unwrap_or_default()
        .to_string_lossy();
    let push = FixturePush {
        name: format!("{vendor}/{}", file_name.trim_end_matches(".request.json")),
        source: request.source.name,
        method: request.method,
        content_type: request.content_type,
        query: request.query,
        headers: request.headers,
        body,
        received_at: request.received_at,
        ids: Vec::new(),
        dead_letter: false,
    };
    Ok((push, context))
}

/// What a mapping produced, reduced to what must not change between rounds.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Events(String, Vec<String>),
    Error(String),
}

fn shape_of(push: &FixturePush, query: Option<&str>, body: &str, ctx: &SourceContext) -> Shape {
    let raw = RawPush {
        method: &push.method,
        content_type: push.content_type.as_deref(),
        query,
        headers: &push.headers,
        body: body.as_bytes(),
        received_at: push.received_at,
    };
    match map_push(&raw, ctx) {
        Ok(mapped) => Shape::Events(
            mapped.dedupe_key,
            mapped
                .events
                .iter()
                .map(|event| event.event_type.as_str().to_owned())
                .collect(),
        ),
        Err(error) => Shape::Error(error.reason().to_owned()),
    }
}

/// Finds the fixture's ids and checks that rewritten rounds keep its meaning; returns the
/// fixture's name when they do not.
fn make_unique(mut push: FixturePush, ctx: &SourceContext) -> Result<FixturePush, String> {
    let original = shape_of(&push, push.query.as_deref(), &push.body, ctx);
    let Shape::Events(_, ref types) = original else {
        push.dead_letter = true;
        return Ok(push);
    };
    let raw = RawPush {
        method: &push.method,
        content_type: push.content_type.as_deref(),
        query: push.query.as_deref(),
        headers: &push.headers,
        body: push.body.as_bytes(),
        received_at: push.received_at,
    };
    let Ok(mapped) = map_push(&raw, ctx) else {
        return Err(push.name);
    };
    let (ids, agent_ids) = ids_of(&mapped.events);
    for candidate in [ids.clone(), ids.into_iter().chain(agent_ids).collect()] {
        push.ids = candidate
            .into_iter()
            .filter(|id| id.len() >= 3 && occurs(&push, id))
            .collect();
        let mut keys = BTreeSet::new();
        let kept = (1..=2).all(|round| {
            let (query, body) = push.rewrite(round);
            match shape_of(&push, query.as_deref(), &body, ctx) {
                Shape::Events(key, round_types) => &round_types == types && keys.insert(key),
                Shape::Error(_) => false,
            }
        });
        if kept {
            return Ok(push);
        }
    }
    Err(push.name)
}

/// Returns the id strings of the events, and separately their agent numbers.
fn ids_of(events: &[callhook_schemas::CloudEvent]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut agents = BTreeSet::new();
    for event in events {
        let data = &event.data;
        ids.extend(data.call_id.iter().cloned());
        ids.extend(data.parent_call_id.iter().cloned());
        for value in data.correlation.values() {
            if let Value::String(text) = value {
                ids.insert(text.clone());
            }
        }
        for (name, value) in &data.vendor_fields {
            if let (true, Value::String(text)) = (name.to_ascii_lowercase().contains("id"), value) {
                ids.insert(text.clone());
            }
        }
        if let Some(number) = data.agent.as_ref().and_then(|agent| agent.number.clone()) {
            agents.insert(number);
        }
    }
    (ids, agents)
}

fn occurs(push: &FixturePush, id: &str) -> bool {
    let marker = "\u{0}";
    replace_standalone(&push.body, id, marker) != push.body
        || push
            .query
            .as_deref()
            .is_some_and(|query| replace_standalone(query, id, marker) != query)
}

/// Replaces the occurrences of `id` not glued to other letters or digits.
fn replace_standalone(text: &str, id: &str, replacement: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(id) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + id.len()..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        if glued(before) || glued(after) {
            out.push_str(id);
        } else {
            out.push_str(replacement);
        }
        rest = &rest[at + id.len()..];
    }
    out.push_str(rest);
    out
}

/// Returns a string shaped like `id` (same length, same character classes), unique per round.
fn reshape(id: &str, round: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(id.as_bytes());
    hasher.update(round.to_le_bytes());
    let mut pool: Vec<u8> = hasher.finalize().to_vec();
    let mut counter = 0u64;
    let mut next = move || {
        if pool.is_empty() {
            counter += 1;
            let mut more = Sha256::new();
            more.update(id.as_bytes());
            more.update(round.to_le_bytes());
            more.update(counter.to_le_bytes());
            pool = more.finalize().to_vec();
        }
        pool.pop().unwrap_or(0)
    };
    let mut out = String::with_capacity(id.len());
    for (position, c) in id.chars().enumerate() {
        let pick = |from: &[u8], byte: u8| from[byte as usize % from.len()] as char;
        let shaped = match c {
            '0' if position == 0 => '0',
            '0'..='9' if position == 0 => pick(b"123456789", next()),
            '0'..='9' => pick(b"0123456789", next()),
            'a'..='f' => pick(b"abcdef", next()),
            'A'..='F' => pick(b"ABCDEF", next()),
            'g'..='z' => pick(b"ghijklmnopqrstuvwxyz", next()),
            'G'..='Z' => pick(b"GHIJKLMNOPQRSTUVWXYZ", next()),
            other => other,
        };
        out.push(shaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reshape_keeps_shape_and_varies_by_round() {
        let id = "491e1dc5-17c6-493f-c97a-09f73322f8a1";
        let one = reshape(id, 1);
        assert_eq!(one.len(), id.len());
        assert_eq!(one.matches('-').count(), 4);
        assert!(one.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(one, reshape(id, 2));
        assert_eq!(one, reshape(id, 1));
        assert!(!reshape("403344537650466816", 3).starts_with('0'));
    }

    #[test]
    fn test_replace_standalone_skips_glued_matches() {
        assert_eq!(
            replace_standalone("a=808&b=1808&c=808", "808", "X"),
            "a=X&b=1808&c=X"
        );
    }

    #[test]
    fn test_fixture_mix_loads_with_unique_keys() {
        let mix = VendorMix::load(&default_fixture_dir()).unwrap();
        assert!(mix.pushes.len() * 10 >= mix.fixtures_found * 8, "{mix:?}");
        let (first, _, body_0) = mix.nth(0);
        let name = first.name.clone();
        let (again, _, body_1) = mix.nth(mix.pushes.len() as u64);
        assert_eq!(again.name, name);
        if !again.ids.is_empty() {
            assert_ne!(body_0, body_1);
        }
    }
}

//! Checks PromQL expressions against the metric families a running callhook exports.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::{Expr, LabelModifier, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};

/// Metric names Prometheus itself attaches to every scrape target.
const SCRAPE_SERIES: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];
/// The Grafana interval variables, replaced by a duration before parsing, as Grafana does.
const GRAFANA_INTERVALS: &[&str] = &["$__rate_interval", "$__interval", "$__range"];

// ---------------------------------------------------------------------------------------------
// What the binary exports
// ---------------------------------------------------------------------------------------------

/// One exported metric family: its type and every label name seen on its samples.
#[derive(Debug, Default, Clone)]
pub struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// Parses Prometheus text into families (histogram samples `_bucket`/`_sum`/`_count` are
/// folded into their family; `le` is kept among the labels).
pub fn parse_exposition(text: &str, families: &mut BTreeMap<String, Family>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let family_name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (families.get(base)?.kind == "histogram").then_some(base)
            })
            .unwrap_or(name);
        let family = families.entry(family_name.to_owned()).or_default();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            if let Some((label, _)) = pair.split_once('=') {
                family.labels.insert(label.trim().to_owned());
            }
        }
    }
}

/// Resolves a selected series name to its family's labels, or says why it is not exported.
fn resolve(name: &str, families: &BTreeMap<String, Family>) -> Result<BTreeSet<String>, String> {
    if SCRAPE_SERIES.contains(&name) {
        return Ok(BTreeSet::new());
    }
    if let Some(family) = families.get(name) {
        if family.kind == "histogram" {
            return Err(format!(
                "`{name}` is a histogram: select `{name}_bucket`, `_sum` or `_count`"
            ));
        }
        return Ok(family.labels.clone());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        let Some(family) = name
            .strip_suffix(suffix)
            .and_then(|base| families.get(base))
        else {
            continue;
        };
        if family.kind != "histogram" {
            return Err(format!(
                "`{name}`: its family is a {}, not a histogram",
                family.kind
            ));
        }
        let mut labels = family.labels.clone();
        if suffix != "_bucket" {
            labels.remove("le");
        }
        return Ok(labels);
    }
    Err(format!("`{name}` is not exported by callhook"))
}

/// Collects the vector selectors under an expression.
#[derive(Default)]
struct Selectors(Vec<VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(selector) => self.0.push(selector.clone()),
            Expr::MatrixSelector(matrix) => self.0.push(matrix.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// Checks every selector and every `by` clause of one expression against the exported families.
struct Checker<'a> {
    families: &'a BTreeMap<String, Family>,
    problems: Vec<String>,
    metrics: BTreeSet<String>,
}

impl Checker<'_> {
    fn labels_of(&mut self, selector: &VectorSelector) -> Option<BTreeSet<String>> {
        let Some(name) = &selector.name else {
            self.problems
                .push(format!("selector `{selector}` has no metric name"));
            return None;
        };
        self.metrics.insert(name.clone());
        match resolve(name, self.families) {
            Ok(mut labels) => {
                labels.extend(TARGET_LABELS.iter().map(|l| (*l).to_owned()));
                Some(labels)
            }
            Err(problem) => {
                self.problems.push(problem);
                None
            }
        }
    }
}

impl ExprVisitor for Checker<'_> {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(_) | Expr::MatrixSelector(_) => {
                let selector = match expr {
                    Expr::MatrixSelector(matrix) => &matrix.vs,
                    Expr::VectorSelector(selector) => selector,
                    _ => unreachable!(),
                };
                let Some(labels) = self.labels_of(selector) else {
                    return Ok(true);
                };
                for matcher in &selector.matchers.matchers {
                    if matcher.name != "__name__" && !labels.contains(&matcher.name) {
                        self.problems.push(format!(
                            "`{selector}` matches on label `{}`, which it does not carry {labels:?}",
                            matcher.name
                        ));
                    }
                }
            }
            Expr::Aggregate(aggregate) => {
                let Some(LabelModifier::Include(by)) = &aggregate.modifier else {
                    return Ok(true);
                };
                let mut inner = Selectors::default();
                walk_expr(&mut inner, &aggregate.expr)?;
                let mut carried = BTreeSet::new();
                for selector in &inner.0 {
                    let name = selector.name.clone().unwrap_or_default();
                    if let Ok(labels) = resolve(&name, self.families) {
                        carried.extend(labels);
                    }
                }
                carried.extend(TARGET_LABELS.iter().map(|l| (*l).to_owned()));
                for label in &by.labels {
                    if !carried.contains(label) {
                        self.problems.push(format!(
                            "`by ({label})` over a series that does not carry it {carried:?}"
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Parses every expression and checks it; returns (problems, every metric name selected).
pub fn check_exprs(
    exprs: &[(String, String)],
    families: &BTreeMap<String, Family>,
) -> (Vec<String>, BTreeSet<String>) {
    let mut checker = Checker {
        families,
        problems: Vec::new(),
        metrics: BTreeSet::new(),
    };
    for (place, text) in exprs {
        let promql = GRAFANA_INTERVALS
            .iter()
            .fold(text.clone(), |acc, variable| acc.replace(variable, "5m"));
        let before = checker.problems.len();
        match promql_parser::parser::parse(&promql) {
            Ok(expr) => {
                walk_expr(&mut checker, &expr).expect("the visitor does not fail");
            }
            Err(error) => checker.problems.push(format!("does not parse: {error}")),
        }
        for problem in &mut checker.problems[before..] {
            *problem = format!("{place}: {problem}\n    in `{text}`");
        }
    }
    (checker.problems, checker.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker itself: it must catch each kind of mistake it exists for.
    #[test]
    fn test_checker_flags_unknown_metrics_wrong_suffixes_and_labels() {
        let exposition = "\
# TYPE callhook_a_total counter
callhook_a_total{source=\"x\"} 1
# TYPE callhook_b_seconds histogram
callhook_b_seconds_bucket{source=\"x\",le=\"0.1\"} 1
callhook_b_seconds_bucket{source=\"x\",le=\"+Inf\"} 1
callhook_b_seconds_sum{source=\"x\"} 0.05
callhook_b_seconds_count{source=\"x\"} 1
";
        let mut families = BTreeMap::new();
        parse_exposition(exposition, &mut families);
        let good = [
        "sum by (source) (rate(callhook_a_total{source=\"x\"}[$__rate_interval]))",
        "histogram_quantile(0.99, sum by (source, le) (rate(callhook_b_seconds_bucket[5m])))",
        "sum by (job) (rate(callhook_b_seconds_sum[5m])) / sum by (job) (rate(callhook_b_seconds_count[5m]))",
        "up{job=\"callhook-ingest\"} == 0",
    ];
        let exprs: Vec<(String, String)> =
            good.iter().map(|e| ("good".into(), (*e).into())).collect();
        let (problems, metrics) = check_exprs(&exprs, &families);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(metrics.contains("callhook_b_seconds_bucket"));
        let bad = [
            ("rate(callhook_missing_total[5m])", "not exported"),
            ("rate(callhook_b_seconds[5m])", "is a histogram"),
            ("rate(callhook_a_total_bucket[5m])", "not a histogram"),
            (
                "rate(callhook_a_total{reason=\"y\"}[5m])",
                "matches on label `reason`",
            ),
            (
                "sum by (reason) (rate(callhook_a_total[5m]))",
                "by (reason)",
            ),
            ("sum by (le) (rate(callhook_b_seconds_sum[5m]))", "by (le)"),
            ("sum(rate(callhook_a_total[5m])", "does not parse"),
        ];
        for (expr, expected) in bad {
            let (problems, _) = check_exprs(&[("bad".into(), expr.into())], &families);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "`{expr}` should be flagged with `{expected}`, got {problems:#?}"
            );
        }
    }
}

//! The console's server-rendered pages. Every value from the database goes through
//! [`escape`]: vendor strings are attacker-controlled.

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;
use callhook_ingest::AdminBody;
use callhook_sinks::sqlite::dead_letters::DeadLetterFilter;
use callhook_sinks::SqliteSink;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use rusqlite::Connection;

use super::queries::{self, CallRow, CallSearch};
use crate::config::Settings;
use crate::dead_letters;

/// A rendered page: its title and the HTML inside `<main>`.
pub struct Page {
    pub title: &'static str,
    pub body: String,
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(character),
        }
    }
    out
}

fn escape_opt(text: &Option<String>) -> String {
    text.as_deref().map(escape).unwrap_or_default()
}

/// Percent-encodes a query value.
fn url_value(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Wraps a page in the layout: navigation, sign-out form with the CSRF token.
pub fn layout(page: &Page, csrf: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · callhook</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <script src=\"/assets/console.js\" defer></script></head><body>\
         <header><strong>callhook</strong><nav><a href=\"/\">Live</a><a href=\"/calls\">Calls</a>\
         <a href=\"/agents\">Agents</a><a href=\"/dead-letters\">Dead letters</a></nav>\
         <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button>Sign out</button></form></header><main>{body}</main></body></html>",
        title = escape(page.title),
        csrf = escape(csrf),
        body = page.body,
    )
}

/// The Live page: a shell the script fills from `/api/live` (with `textContent` only).
pub fn live_page() -> Page {
    Page {
        title: "Live",
        body: "<section id=\"live\" data-live=\"1\">\
            <p class=\"status\">Normalizer lag: <span id=\"lag\">–</span> records · \
            <span id=\"stream\">connecting…</span></p>\
            <h2>In progress</h2><table id=\"in-progress\"><thead><tr><th>State</th><th>Duration</th>\
            <th>Caller</th><th>Callee</th><th>Agent</th><th>Queue</th><th>Source</th><th>Call</th>\
            </tr></thead><tbody></tbody></table>\
            <h2>Ended in the last 10 minutes</h2><table id=\"ended\"><thead><tr><th>Ended</th>\
            <th>Disposition</th><th>Talk</th><th>Caller</th><th>Callee</th><th>Agent</th>\
            <th>Source</th><th>Call</th></tr></thead><tbody></tbody></table>\
            <h2>Sources</h2><table id=\"sources\"><thead><tr><th>Source</th><th>Pushes/s</th>\
            <th>Ack p99</th><th>Last push</th><th></th></tr></thead><tbody></tbody></table>\
            </section>"
            .to_owned(),
    }
}

/// The sign-in page.
pub fn login_page(failed: bool) -> String {
    let message = match failed {
        true => "<p class=\"error\">Wrong token.</p>",
        false => "",
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in · callhook</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body><main class=\"login\">\
         <h1>callhook console</h1>{message}<form method=\"post\" action=\"/login\">\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>\
         <button>Sign in</button></form></main></body></html>"
    )
}

/// A page with one message.
pub fn error_page(message: &str) -> String {
    layout(
        &Page {
            title: "Error",
            body: format!("<p class=\"error\">{}</p>", escape(message)),
        },
        "",
    )
}

/// The Calls page: search form, one page of results, a link to the next.
pub fn calls_page(
    connection: &Connection,
    query: &str,
    sources: &[String],
) -> anyhow::Result<Page> {
    let search: CallSearch = serde_urlencoded::from_str(query).unwrap_or_default();
    let calls = queries::search_calls(connection, &search, sources, chrono::Utc::now())?;
    let field = |name: &str, label: &str, value: &Option<String>, kind: &str| {
        format!(
            "<label>{label} <input type=\"{kind}\" name=\"{name}\" value=\"{}\"></label>",
            escape_opt(value)
        )
    };
    let mut body =
        String::from("<h1>Calls</h1><form method=\"get\" action=\"/calls\" class=\"search\">");
    body.push_str(&field("number", "Number", &search.number, "search"));
    body.push_str(&field("call", "Call id", &search.call, "search"));
    body.push_str(&field("agent", "Agent", &search.agent, "search"));
    body.push_str(&field("from", "From (UTC)", &search.from, "datetime-local"));
    body.push_str(&field("to", "To (UTC)", &search.to, "datetime-local"));
    body.push_str("<button>Search</button></form>");
    if search
        .number
        .as_deref()
        .is_some_and(|n| !n.trim().is_empty())
        && search.from.as_deref().is_none_or(|f| f.trim().is_empty())
    {
        let _ = write!(
            body,
            "<p class=\"status\">A number search covers the last {} hours unless From is set.</p>",
            queries::NUMBER_SEARCH_DEFAULT_HOURS
        );
    }
    body.push_str(&calls_table(&calls));
    if calls.len() == queries::PAGE_ROWS {
        if let Some(last) = calls.last() {
            let mut next: Vec<(&str, &str)> = Vec::new();
            for (name, value) in [
                ("number", &search.number),
                ("call", &search.call),
                ("agent", &search.agent),
                ("from", &search.from),
                ("to", &search.to),
            ] {
                if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                    next.push((name, value));
                }
            }
            next.push(("before", &last.first_event_at));
            let query = serde_urlencoded::to_string(&next)?;
            let _ = write!(
                body,
                "<p><a href=\"/calls?{}\">Older calls →</a></p>",
                escape(&query)
            );
        }
    }
    Ok(Page {
        title: "Calls",
        body,
    })
}

fn call_link(call: &CallRow) -> String {
    format!(
        "<a href=\"/call?source={}&amp;id={}\">{}</a>",
        url_value(&call.source),
        url_value(&call.call_id),
        escape(&call.call_id)
    )
}

fn calls_table(calls: &[CallRow]) -> String {
    let mut out = String::from(
        "<table><thead><tr><th>First event</th><th>State</th><th>Direction</th><th>Caller</th>\
         <th>Callee</th><th>Agent</th><th>Disposition</th><th>Talk (s)</th><th>Source</th>\
         <th>Call</th></tr></thead><tbody>",
    );
    for call in calls {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&call.first_event_at),
            call.state,
            escape(&call.direction),
            escape_opt(&call.caller),
            escape_opt(&call.callee),
            escape_opt(&call.agent_number),
            escape_opt(&call.agent_name),
            escape_opt(&call.disposition),
            call.talk_seconds.map(|s| s.to_string()).unwrap_or_default(),
            escape(&call.source),
            call_link(call),
        );
    }
    if calls.is_empty() {
        out.push_str("<tr><td colspan=\"10\">No calls.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CallKey {
    source: String,
    id: String,
}

/// A call's page: its row and its timeline.
pub fn call_page(connection: &Connection, query: &str) -> anyhow::Result<Page> {
    let key: CallKey = serde_urlencoded::from_str(query).unwrap_or_default();
    let Some((call, events)) = queries::call_timeline(connection, &key.source, &key.id)? else {
        return Ok(Page {
            title: "Call",
            body: "<p class=\"error\">No such call.</p>".to_owned(),
        });
    };
    let mut body = format!("<h1>Call {}</h1>", escape(&call.call_id));
    body.push_str(&calls_table(std::slice::from_ref(&call)));
    body.push_str(
        "<h2>Timeline</h2><table class=\"timeline\"><thead><tr><th>Vendor time</th>\
         <th>Received</th><th>Type</th><th>Event data</th></tr></thead><tbody>",
    );
    for event in &events {
        let pretty = serde_json::from_str::<serde_json::Value>(&event.data)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .unwrap_or_else(|| event.data.clone());
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><details><summary>data</summary><pre>{}</pre></details></td></tr>",
            escape(&event.time),
            escape(&event.received_at),
            escape(&event.event_type),
            escape(&pretty),
        );
    }
    body.push_str("</tbody></table>");
    Ok(Page {
        title: "Call",
        body,
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct AgentKey {
    source: Option<String>,
    agent: Option<String>,
}

/// The Agents page: the status board, and one agent's recent changes when selected.
pub fn agents_page(connection: &Connection, query: &str) -> anyhow::Result<Page> {
    let key: AgentKey = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut body = String::from("<h1>Agents</h1>");
    if let (Some(source), Some(agent)) = (&key.source, &key.agent) {
        let changes = queries::agent_changes(connection, source, agent)?;
        let _ = write!(
            body,
            "<h2>Recent changes of {} ({})</h2><table><thead><tr><th>Time</th><th>Type</th>\
             <th>Status</th></tr></thead><tbody>",
            escape(agent),
            escape(source)
        );
        for change in &changes {
            let data: serde_json::Value = serde_json::from_str(&change.data).unwrap_or_default();
            let status = data["agent_status"].as_str().unwrap_or("");
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&change.time),
                escape(&change.event_type),
                escape(status)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(
        "<h2>Status board</h2><table><thead><tr><th>Source</th><th>Agent</th><th>Name</th>\
         <th>Status</th><th>Vendor label</th><th>Since</th></tr></thead><tbody>",
    );
    for agent in queries::agents(connection)? {
        let _ = write!(
            body,
            "<tr class=\"agent-{status_class}\"><td>{}</td><td><a href=\"/agents?source={}&amp;agent={}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&agent.source),
            url_value(&agent.source),
            url_value(&agent.agent_number),
            escape(&agent.agent_number),
            escape_opt(&agent.agent_name),
            escape(&agent.status),
            escape_opt(&agent.raw_label),
            escape(&agent.status_at),
            status_class = escape(&agent.status.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
        );
    }
    body.push_str("</tbody></table>");
    Ok(Page {
        title: "Agents",
        body,
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct DeadLetterQuery {
    source: Option<String>,
    reason: Option<String>,
    all: Option<String>,
    show: Option<String>,
    message: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|value| !value.trim().is_empty())
}

/// The Dead letters page: a list by reason and source, one shown with its raw push, and the
/// redrive forms. Reads through the same sink functions as `callhook dead-letters`.
pub fn dead_letters_page(settings: &Settings, query: &str, csrf: &str) -> anyhow::Result<String> {
    let params: DeadLetterQuery = serde_urlencoded::from_str(query).unwrap_or_default();
    let mut body = String::from("<h1>Dead letters</h1>");
    if let Some(message) = non_empty(&params.message) {
        let _ = write!(body, "<p class=\"message\">{}</p>", escape(&message));
    }
    if !settings.sqlite.path.exists() {
        body.push_str("<p>No database yet.</p>");
        return Ok(layout(
            &Page {
                title: "Dead letters",
                body,
            },
            csrf,
        ));
    }
    let sink = SqliteSink::open(&settings.sqlite)?;
    if let Some(raw_ref) = non_empty(&params.show) {
        let shown = dead_letters::show_text(settings, &sink, &raw_ref)?;
        let _ = write!(
            body,
            "<h2>{}</h2><pre class=\"raw\">{}</pre>{}",
            escape(&raw_ref),
            escape(&shown),
            redrive_form(csrf, &[("raw_ref", &raw_ref)], "Redrive this one"),
        );
    }
    let filter = DeadLetterFilter {
        source: non_empty(&params.source),
        reason: non_empty(&params.reason),
        include_resolved: params.all.is_some(),
        limit: Some(200),
        ..DeadLetterFilter::default()
    };
    let letters = sink.dead_letters(&filter)?;
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/dead-letters\" class=\"search\">\
         <label>Source <input name=\"source\" value=\"{}\"></label>\
         <label>Reason <input name=\"reason\" value=\"{}\"></label>\
         <label><input type=\"checkbox\" name=\"all\" value=\"1\"{}> resolved too</label>\
         <button>Filter</button></form>",
        escape_opt(&filter.source),
        escape_opt(&filter.reason),
        if filter.include_resolved {
            " checked"
        } else {
            ""
        },
    );
    let mut selection: Vec<(&str, &str)> = Vec::new();
    if let Some(source) = &filter.source {
        selection.push(("source", source));
    }
    if let Some(reason) = &filter.reason {
        selection.push(("reason", reason));
    }
    let bulk = redrive_form(
        csrf,
        &selection,
        "Redrive every open one matching the filter",
    );
    body.push_str(&bulk.replacen(
        "<form ",
        "<form data-confirm=\"Redrive every open dead letter matching the filter?\" ",
        1,
    ));
    body.push_str(
        "<table><thead><tr><th>Received</th><th>Source</th><th>Reason</th><th>Detail</th>\
         <th>State</th><th>Raw record</th><th></th></tr></thead><tbody>",
    );
    for letter in &letters {
        let state = letter
            .resolution
            .as_deref()
            .map_or("open".to_owned(), |how| format!("resolved ({how})"));
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/dead-letters?show={}\">{}</a></td><td>{}</td></tr>",
            escape(&letter.received_at.to_rfc3339()),
            escape(&letter.source),
            escape(&letter.reason),
            escape(&letter.detail),
            escape(&state),
            url_value(&letter.raw_ref),
            escape(&letter.raw_ref),
            match letter.resolution {
                None => redrive_form(csrf, &[("raw_ref", &letter.raw_ref)], "Redrive"),
                Some(_) => String::new(),
            },
        );
    }
    if letters.is_empty() {
        body.push_str("<tr><td colspan=\"7\">No dead letters.</td></tr>");
    }
    body.push_str("</tbody></table>");
    Ok(layout(
        &Page {
            title: "Dead letters",
            body,
        },
        csrf,
    ))
}

fn redrive_form(csrf: &str, fields: &[(&str, &str)], label: &str) -> String {
    let mut form = format!(
        "<form method=\"post\" action=\"/dead-letters/redrive\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            form,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        );
    }
    let _ = write!(form, "<button>{}</button></form>", escape(label));
    form
}

/// Redrives what the form selects (`raw_ref`, or `source` and `reason`) with the same
/// function as `callhook dead-letters redrive`; returns the message to show.
pub fn redrive(settings: &Settings, form: &HashMap<String, String>) -> anyhow::Result<String> {
    let value = |name: &str| form.get(name).filter(|v| !v.trim().is_empty()).cloned();
    let filter = DeadLetterFilter {
        source: value("source"),
        reason: value("reason"),
        raw_ref: value("raw_ref"),
        ..DeadLetterFilter::default()
    };
    let mut sink = SqliteSink::open(&settings.sqlite)?;
    let (outcome, missing) = dead_letters::redrive(settings, &mut sink, &filter)?;
    tracing::info!(
        resolved = outcome.resolved,
        still_dead = outcome.still_dead,
        "dead letters redriven from the console"
    );
    Ok(format!(
        "Redriven: {} resolved ({} events stored), {} still dead ({} with a new reason), {} without their raw record.",
        outcome.resolved, outcome.events_inserted, outcome.still_dead, outcome.reason_changed, missing
    ))
}

/// An HTML response.
pub fn html_response(status: StatusCode, html: String) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from(html)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A plain-text response.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Headers of every console response: no inline or foreign script, no framing, no sniffing.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` the browser sends `Origin: null`
    // on the console's own form posts, which the CSRF check must refuse.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape() {
        assert_eq!(
            escape("<script>alert('x\")</script>&"),
            "&lt;script&gt;alert(&#39;x&quot;)&lt;/script&gt;&amp;"
        );
    }
}

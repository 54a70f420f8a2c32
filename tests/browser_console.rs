//! The console in a real browser: headless Chromium (Debian's package) driven over the
//! DevTools protocol (testkit's `chromium`). It signs in, watches the simulator's one call go
//! ringing → talking → ended with its disposition on the Live page without a reload, opens the
//! call's timeline, checks that a `<script>` agent name is shown as text and never runs, and
//! dead-letters a push on a mis-configured source, then redrives it after the config is fixed.
//! Screenshots go to `target/browser-artifacts/`.
//!
//! Without Chromium it is skipped with a message, except in CI (`CI` set), where it fails:
//! `scripts/test` installs Debian's `chromium` when run as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callhook_testkit::chromium::{find_chromium, Browser};
use common::Server;
use serde_json::Value;

const TOKEN: &str = "browser-test-token-0123";
/// A seed whose single 7moor flow is an answered inbound call (ring, answer, hang up).
const SEED: &str = "5";
const XSS_NAME: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";

fn config(legacy_dialect: &str) -> String {
    format!(
        "[console]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [sources.7moor]\ndialect = \"7moor\"\n\
         [sources.legacy]\ndialect = \"{legacy_dialect}\"\n"
    )
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-artifacts")
}

fn sign_in(browser: &mut Browser, console: &str) {
    browser.navigate(&format!("{console}/login")).unwrap();
    browser
        .evaluate(&format!(
            "document.querySelector('input[name=token]').value = '{TOKEN}'; \
             document.querySelector('form').submit(); true"
        ))
        .unwrap();
    browser
        .wait_for(
            "location.pathname === '/' && !!document.getElementById('live')",
            Duration::from_secs(20),
        )
        .unwrap();
}

fn ring_push(call: &str, agent_name: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::json!({
        "eventUniqueId": format!("{call}-ring"), "accountId": "20000153", "callUniqueId": call,
        "pushType": "dialoutRing", "customerNumber": "17319132391", "displayNumber": "01081400192",
        "statusTime": now.to_string(), "callEvent": "ring", "callType": "dialout",
        "agentNumber": "20001", "agentName": agent_name, "extras": ""
    })
    .to_string()
}

#[test]
fn test_console_in_chromium() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is missing in CI (scripts/test installs Debian's `chromium` as root)"
        );
        eprintln!(
            "skipped: Chromium is not installed (run scripts/test as root, or `apt-get install chromium`)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let shots = artifacts();
    let server = Server::start(&data, Some(&config("uincall")));
    let console = format!("http://{}", server.console.expect("console"));
    let mut browser = Browser::launch(&chromium).expect("start chromium");

    sign_in(&mut browser, &console);
    // A marker that a reload would lose.
    browser
        .evaluate("window.__noReload = 'kept'; true")
        .unwrap();

    // One simulated call, spread over 9 s so that each state is on screen for a while.
    let ledger = dir.path().join("ledger.jsonl");
    let mut simulate = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["simulate", "--target", &format!("http://{}", server.public)])
        .args(["--calls", "1", "--vendor-mix", "7moor=100", "--seed", SEED])
        .args(["--flow-spread-ms", "9000", "--ledger"])
        .arg(&ledger)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let row_states = "JSON.stringify([...document.querySelectorAll('tr[data-call]')]\
         .map(r => [r.dataset.call, r.dataset.state, \
         (r.querySelector('.disposition') || {}).textContent || '']))";
    let mut seen: Vec<String> = Vec::new();
    let mut final_disposition = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut simulate_done = false;
    let mut shot_taken = false;
    loop {
        let rows: Vec<(String, String, String)> =
            serde_json::from_str(browser.evaluate(row_states).unwrap().as_str().unwrap()).unwrap();
        if let Some((_, state, disposition)) = rows.first() {
            if seen.last() != Some(state) {
                seen.push(state.clone());
            }
            if state == "talking" && !shot_taken {
                browser.screenshot(&shots.join("live-talking.png")).unwrap();
                shot_taken = true;
            }
            final_disposition.clone_from(disposition);
            if state == "ended" && simulate_done {
                break;
            }
        }
        simulate_done = simulate_done || simulate.try_wait().unwrap().is_some();
        assert!(Instant::now() < deadline, "states seen: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let call: Value = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["kind"] == "call")
        .expect("the ledger's call");
    assert_eq!(
        seen,
        ["ringing", "talking", "ended"],
        "the Live page followed the call"
    );
    assert_eq!(final_disposition, call["disposition"].as_str().unwrap());
    assert_eq!(
        browser.evaluate("window.__noReload").unwrap(),
        "kept",
        "no reload"
    );
    browser.screenshot(&shots.join("live-ended.png")).unwrap();

    // The call's timeline, from the link on the Live page.
    browser
        .evaluate("document.querySelector('tr[data-call] a').click(); true")
        .unwrap();
    browser
        .wait_for("location.pathname === '/call'", Duration::from_secs(20))
        .unwrap();
    browser
        .wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .unwrap();
    let timeline = browser
        .evaluate("document.querySelector('table.timeline').innerText")
        .unwrap();
    let timeline = timeline.as_str().unwrap();
    for event_type in ["call.ringing", "call.answered", "call.ended"] {
        assert!(timeline.contains(event_type), "{timeline}");
    }
    browser
        .screenshot(&shots.join("call-timeline.png"))
        .unwrap();

    // A script in an agent name is text on the Live page and on the Calls page.
    browser.navigate(&format!("{console}/")).unwrap();
    let (status, _) = server.request(
        "POST",
        "/hooks/7moor",
        Some("application/json"),
        ring_push("xss-call", XSS_NAME).as_bytes(),
    );
    assert_eq!(status, 200);
    browser
        .wait_for(
            "!!document.querySelector('tr[data-call=\"xss-call\"]')",
            Duration::from_secs(20),
        )
        .unwrap();
    let shown = browser
        .evaluate("document.querySelector('tr[data-call=\"xss-call\"]').innerText")
        .unwrap();
    assert!(shown.as_str().unwrap().contains(XSS_NAME), "{shown}");
    browser.navigate(&format!("{console}/calls")).unwrap();
    assert!(browser
        .evaluate("document.body.innerText")
        .unwrap()
        .as_str()
        .unwrap()
        .contains(XSS_NAME));
    assert_eq!(
        browser.evaluate("window.__xss === undefined").unwrap(),
        true
    );
    assert_eq!(
        browser
            .evaluate("document.querySelectorAll('main img').length")
            .unwrap(),
        0
    );
    browser
        .screenshot(&shots.join("calls-xss-as-text.png"))
        .unwrap();

    // A 7moor push on a source configured with the wrong dialect is dead-lettered ...
    let (status, _) = server.request(
        "POST",
        "/hooks/legacy",
        Some("application/json"),
        ring_push("legacy-call", "agent").as_bytes(),
    );
    assert_eq!(status, 200);
    server.wait_until_normalized();
    browser
        .navigate(&format!("{console}/dead-letters"))
        .unwrap();
    let letters = browser
        .evaluate("document.querySelector('main').innerText")
        .unwrap();
    assert!(letters.as_str().unwrap().contains("legacy"), "{letters}");
    browser.screenshot(&shots.join("dead-letters.png")).unwrap();

    // ... and redriven from the console once the source's dialect is fixed.
    assert!(server.terminate().success());
    let server = Server::start(&data, Some(&config("7moor")));
    let console = format!("http://{}", server.console.expect("console"));
    sign_in(&mut browser, &console);
    browser
        .navigate(&format!("{console}/dead-letters?source=legacy"))
        .unwrap();
    browser
        .evaluate(
            "document.querySelector('td form[action=\"/dead-letters/redrive\"]').submit(); true",
        )
        .unwrap();
    let redriven = browser.wait_for(
        "(document.querySelector('.message') || {}).textContent?.includes('1 resolved')",
        Duration::from_secs(20),
    );
    if let Err(error) = redriven {
        let page = browser
            .evaluate("document.body.innerText")
            .unwrap_or_default();
        panic!("{error}: {page}");
    }
    browser
        .screenshot(&shots.join("dead-letters-redriven.png"))
        .unwrap();
    let resolved: i64 = server
        .db()
        .query_row(
            "SELECT COUNT(*) FROM calls WHERE source = 'legacy' AND call_id = 'legacy-call'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(resolved, 1, "the redriven push's call is stored");
    assert!(server.terminate().success());
    let _ = simulate.wait();
}

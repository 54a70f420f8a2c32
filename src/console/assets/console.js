// callhook console: the Live page's updates. Data reaches the page only through textContent
// (never innerHTML): vendor strings are attacker-controlled.
"use strict";

// Forms with data-confirm (redrive of a whole filtered set) ask before they post.
document.addEventListener("submit", function (event) {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

(function () {
  const live = document.getElementById("live");
  if (!live) return;
  let clockOffsetMs = 0; // server time - browser time
  let data = null;
  let fetching = false;
  let again = false;

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function callCell(row, call) {
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/call?source=" + encodeURIComponent(call.source) + "&id=" + encodeURIComponent(call.call_id);
    a.textContent = call.call_id;
    td.appendChild(a);
    row.appendChild(td);
  }

  function agent(call) {
    return [call.agent_number, call.agent_name].filter(Boolean).join(" ");
  }

  function duration(fromIso) {
    if (!fromIso) return "";
    const seconds = Math.max(0, Math.floor((Date.now() + clockOffsetMs - Date.parse(fromIso)) / 1000));
    const m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + String(s).padStart(2, "0");
  }

  function since(call) {
    return call.state === "talking" ? call.answered_at : (call.ringing_at || call.first_event_at);
  }

  function fill(id, rows, render) {
    const body = document.querySelector("#" + id + " tbody");
    const fresh = document.createElement("tbody");
    rows.forEach(function (item) {
      const tr = document.createElement("tr");
      render(tr, item);
      fresh.appendChild(tr);
    });
    body.replaceWith(fresh);
  }

  function render() {
    if (!data) return;
    document.getElementById("lag").textContent =
      data.normalizer_lag_records == null ? "–" : String(data.normalizer_lag_records);
    fill("in-progress", data.calls.in_progress, function (tr, call) {
      tr.dataset.call = call.call_id;
      tr.dataset.state = call.state;
      cell(tr, call.state, "state-" + call.state);
      const d = cell(tr, duration(since(call)), "duration");
      d.dataset.since = since(call) || "";
      cell(tr, call.caller); cell(tr, call.callee); cell(tr, agent(call));
      cell(tr, call.queue); cell(tr, call.source); callCell(tr, call);
    });
    fill("ended", data.calls.recently_ended, function (tr, call) {
      tr.dataset.call = call.call_id;
      tr.dataset.state = "ended";
      cell(tr, call.ended_at); cell(tr, call.disposition, "disposition");
      cell(tr, call.talk_seconds == null ? "" : call.talk_seconds + " s");
      cell(tr, call.caller); cell(tr, call.callee); cell(tr, agent(call));
      cell(tr, call.source); callCell(tr, call);
    });
    fill("sources", data.sources, function (tr, source) {
      cell(tr, source.source);
      cell(tr, source.pushes_per_second.toFixed(1));
      cell(tr, source.ack_p99_ms == null ? "" : "≤ " + source.ack_p99_ms + " ms");
      cell(tr, source.seconds_since_last_push == null ? "none since start" : source.seconds_since_last_push + " s ago");
      cell(tr, source.quiet ? "quiet" : "", source.quiet ? "quiet" : "");
    });
  }

  function tick() {
    document.querySelectorAll("#in-progress td.duration").forEach(function (td) {
      td.textContent = duration(td.dataset.since);
    });
  }

  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch("/api/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location = "/login"; throw new Error("signed out"); }
        return response.json();
      })
      .then(function (body) {
        clockOffsetMs = Date.parse(body.now) - Date.now();
        data = body;
        render();
      })
      .catch(function () {})
      .finally(function () {
        fetching = false;
        if (again) { again = false; setTimeout(refresh, 200); }
      });
  }

  const stream = new EventSource("/events");
  const state = document.getElementById("stream");
  stream.onopen = function () { state.textContent = "live"; };
  stream.onerror = function () { state.textContent = "reconnecting…"; };
  stream.addEventListener("change", refresh);
  refresh();
  setInterval(tick, 1000);
  // Rates, quiet flags and ended calls leaving the page change without events.
  setInterval(refresh, 10000);
})();

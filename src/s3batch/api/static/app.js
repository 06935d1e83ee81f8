// s3batch dashboard: vanilla JS against /api/v1 with the session cookie. No framework, no
// build step. Routes: "#/" (job list) and "#/jobs/<id>" (one job). All data goes into the
// page through textContent, never as HTML.
"use strict";

const API = "/api/v1";
const STATUSES = ["New", "Preparing", "Suspended", "Ready", "Active", "Pausing", "Paused",
  "Completing", "Complete", "Cancelling", "Cancelled", "Failing", "Failed"];
const LIST_POLL_MS = 3000;     // the job list is refreshed by polling
const JOB_POLL_MS = 2000;      // fallback when EventSource is missing or keeps failing
const PAGE_SIZE = 50;
const FAILURES_PAGE = 100;
const MAX_SSE_ERRORS = 3;      // consecutive stream errors before falling back to polling

const TIMELINE_REFRESH_MS = 2000;  // the job store samples a running job every 2 s
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { timer: null, source: null, sseErrors: 0, jobId: null, nextToken: null,
  failuresAfter: null, failedSeen: -1, cause: null, timelineAt: 0, generation: 0 };

const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(status, body) {
    super(body && body.message ? `${body.code}: ${body.message}` : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
  if (init.method && init.method !== "GET") {
    // The server refuses cookie-authenticated writes without this header (CSRF guard).
    init.headers = { ...init.headers, "Content-Type": "application/json", "X-S3Batch-CSRF": "1" };
  }
  const response = await fetch(API + path, init);
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

function show(view) {
  for (const id of ["login-view", "list-view", "job-view", "pipelines-view", "pipeline-view"]) {
    $(id).hidden = id !== view;
  }
}

function notice(message) {
  $("notice").textContent = message || "";
  $("notice").hidden = !message;
}

function stopLive() {
  if (state.timer) clearTimeout(state.timer);
  if (state.source) state.source.close();
  state.timer = null;
  state.source = null;
}

// Each navigation starts a new generation. stopLive() clears the armed timer, but a request
// already in flight for the view being left would, when it returns, render that view again and
// re-arm its poll (which then pulls the page back to it): views check their generation first.
function nextGeneration() {
  stopLive();
  state.generation += 1;
  return state.generation;
}

function isCurrent(generation) {
  return generation === state.generation;
}

function failed(error) {
  if (error instanceof HttpError && error.status === 401) {
    stopLive();
    showLogin();
    return;
  }
  notice(error.message || String(error));
}

// -- login ------------------------------------------------------------------------------------

function showLogin() {
  $("whoami").textContent = "";
  $("logout").hidden = true;
  show("login-view");
}

async function login(event) {
  event.preventDefault();
  try {
    const who = await api("/session", { method: "POST",
      body: JSON.stringify({ access_key: $("access-key").value, secret_key: $("secret-key").value }) });
    $("secret-key").value = "";
    setIdentity(who);
    notice("");
    route();
  } catch (error) {
    notice(error.message);
  }
}

function setIdentity(who) {
  $("whoami").textContent = `${who.access_key} · account ${who.account_id}`;
  $("logout").hidden = false;
}

async function logout() {
  nextGeneration();
  await api("/session", { method: "DELETE" }).catch(() => null);
  showLogin();
}

// -- formatting ---------------------------------------------------------------------------------

function badge(element, status) {
  element.textContent = status;
  element.className = `badge ${status}`;
}

function progressBar(progress) {
  const outer = document.createElement("div");
  outer.className = "progress";
  const bar = document.createElement("div");
  bar.className = "bar";
  setBar(bar, progress);
  outer.append(bar);
  return outer;
}

function setBar(bar, progress) {
  const percent = progress.percent == null ? 0 : Math.min(100, progress.percent);
  bar.style.width = `${percent}%`;
  bar.classList.toggle("failed", progress.failed > 0 && progress.succeeded === 0);
  bar.title = progress.total == null ? "not started" : `${progress.done} / ${progress.total}`;
}

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// A rate rounded for people: "1.1k/s", "54k/s", "3.1/s".
function rate(perSecond) {
  if (perSecond == null) return "–";
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(1)}M/s`;
  if (perSecond >= 1e4) return `${Math.round(perSecond / 1e3)}k/s`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)}k/s`;
  return perSecond >= 10 ? `${Math.round(perSecond)}/s` : `${perSecond.toFixed(1)}/s`;
}

// "3 min ago" in the element, the absolute local time on hover.
function relativeTime(element, iso) {
  if (!iso) { element.textContent = "–"; element.title = ""; return; }
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  element.textContent = seconds < 45 ? "just now" : `${duration(seconds)} ago`;
  element.title = when(iso);
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text); else td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  row.append(td);
  return td;
}

// -- job list -----------------------------------------------------------------------------------

async function showList(append, generation) {
  if (!isCurrent(generation)) return;
  show("list-view");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("status-filter").value) query.append("status", $("status-filter").value);
  if (append && state.nextToken) query.set("next_token", state.nextToken);
  try {
    const page = await api(`/jobs?${query}`);
    if (!isCurrent(generation)) return;
    renderJobs(page.jobs, append);
    state.nextToken = page.next_token;
    $("next-page").hidden = !page.next_token;
    notice("");
  } catch (error) {
    if (isCurrent(generation)) failed(error);
    return;
  }
  // Only the first page refreshes itself: later pages would shift under the reader.
  if (!append) state.timer = setTimeout(() => showList(false, generation), LIST_POLL_MS);
}

function renderJobs(jobs, append) {
  const body = $("jobs-body");
  if (!append) body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.JobId;
    const link = document.createElement("a");
    link.href = `#/jobs/${encodeURIComponent(job.JobId)}`;
    link.textContent = job.Description || job.JobId;
    cell(row, link);
    cell(row, job.Operation);
    const status = document.createElement("span");
    badge(status, job.Status);
    cell(row, status, "status");
    cell(row, job.Priority);
    cell(row, progressBar(job.progress));
    relativeTime(cell(row, ""), job.CreationTime);
    body.append(row);
  }
  $("jobs-empty").hidden = body.children.length > 0;
}

// -- one job ------------------------------------------------------------------------------------

function showJob(jobId, generation) {
  show("job-view");
  state.jobId = jobId;
  state.failedSeen = -1;
  state.cause = null;
  state.timelineAt = 0;
  $("job-id").textContent = jobId;
  $("job-title").textContent = "Job";
  $("failures-body").replaceChildren();
  $("timeline-chart").replaceChildren();
  $("causes-chart").replaceChildren();
  const base = `${API}/jobs/${encodeURIComponent(jobId)}/report/`;
  for (const name of ["succeeded", "failed"]) $(`download-${name}`).href = `${base}${name}.csv`;
  $("download-manifest").href = `${base}manifest.json`;
  refreshJob(generation).then(() => { if (isCurrent(generation)) startLive(jobId); });
}

async function refreshJob(generation) {
  try {
    const detail = await api(`/jobs/${encodeURIComponent(state.jobId)}`);
    if (!isCurrent(generation)) return;
    renderJob(detail);
    notice("");
  } catch (error) {
    if (isCurrent(generation)) failed(error);
  }
}

function renderJob(detail) {
  const job = detail.job, p = detail.progress;
  $("job-title").textContent = job.Description || "Job";
  document.title = `${job.Description || job.JobId} · s3batch`;
  badge($("job-status"), job.Status);
  setBar($("job-bar"), p);
  $("job-operation").textContent = Object.keys(job.Operation)[0];
  $("job-total").textContent = p.total == null ? "–" : p.total;
  $("job-succeeded").textContent = p.succeeded;
  $("job-failed").textContent = p.failed;
  $("job-rate").textContent = p.rate_per_s == null ? "–" : `${rate(p.rate_per_s)} (average while active)`;
  $("job-eta").textContent = detail.terminal ? "ended" : duration(p.eta_s);
  $("job-priority").textContent = job.Priority;
  relativeTime($("job-created"), job.CreationTime);
  $("job-report").textContent = detail.report_manifest || "not written yet";
  $("download-manifest-item").hidden = !detail.report_manifest;
  $("job-reason").textContent = job.StatusUpdateReason
    || (job.FailureReasons || []).map((f) => `${f.FailureCode}: ${f.FailureReason}`).join("; ") || "–";
  $("confirm").disabled = job.Status !== "Suspended";
  $("cancel").disabled = detail.terminal || job.Status === "Cancelling";
  if (document.activeElement !== $("priority-input")) $("priority-input").value = job.Priority;
  if (p.failed !== state.failedSeen) {
    state.failedSeen = p.failed;
    loadFailures(false);
    loadCauses();
  }
  if (Date.now() - state.timelineAt >= TIMELINE_REFRESH_MS || detail.terminal) {
    state.timelineAt = Date.now();
    loadTimeline();
  }
}

// -- charts (SVG drawn here: no charting library, nothing from another origin) -----------------

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text != null) element.textContent = text;
  return element;
}

// A step path: each value holds over its interval [x0, x1] (a rate is an average over it); the
// pen lifts where the value is null (a gap: the job was not running then).
function pathData(steps) {
  let d = "", pen = false;
  for (const [x0, x1, y] of steps) {
    if (y == null) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x0.toFixed(1)},${y.toFixed(1)} L${x1.toFixed(1)},${y.toFixed(1)} `;
    pen = true;
  }
  return d.trim();
}

async function loadTimeline() {
  const jobId = state.jobId;
  try {
    const timeline = await api(`/jobs/${encodeURIComponent(jobId)}/timeline`);
    if (state.jobId === jobId) drawTimeline($("timeline-chart"), timeline.points);
  } catch (error) {
    failed(error);
  }
}

function drawTimeline(chart, points) {
  chart.replaceChildren();
  chart.dataset.points = String(points.length);
  $("timeline-empty").hidden = points.length > 0;
  if (!points.length) return;
  const W = 800, left = 56, right = 56, rates = { top: 12, bottom: 150 }, load = { top: 178, bottom: 226 };
  const t0 = points[0].since, t1 = points[points.length - 1].at;
  const x = (t) => left + (W - left - right) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const peak = Math.max(1, ...points.map((p) => Math.max(p.succeeded_per_s || 0, p.failed_per_s || 0)));
  const yRate = (v) => (v == null ? null : rates.bottom - (rates.bottom - rates.top) * (v / peak));
  const most = Math.max(1, ...points.map((p) => Math.max(p.in_flight || 0, p.limit || 0)));
  const yLoad = (v) => (v == null ? null : load.bottom - (load.bottom - load.top) * (v / most));
  for (const y of [rates.bottom, load.bottom]) chart.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: y, y2: y }));
  chart.append(svg("text", { x: left - 6, y: rates.top + 8, "text-anchor": "end" }, rate(peak)));
  chart.append(svg("text", { x: left - 6, y: rates.bottom, "text-anchor": "end" }, "0"));
  chart.append(svg("text", { x: W - right + 6, y: load.top + 8 }, `${most} req`));
  chart.append(svg("text", { x: W - right + 6, y: load.bottom }, "0"));
  chart.append(svg("text", { x: left, y: 244 }, new Date(t0 * 1000).toLocaleTimeString()));
  chart.append(svg("text", { x: W - right, y: 244, "text-anchor": "end" }, `+${duration(t1 - t0)}`));
  const steps = (value) => points.map((p) => [x(p.since), x(p.at), value(p)]);
  const series = [
    ["ok", steps((p) => yRate(p.succeeded_per_s))],
    ["bad", steps((p) => yRate(p.failed_per_s))],
    ["limit", steps((p) => yLoad(p.limit))],
    ["flight", steps((p) => yLoad(p.in_flight))],
  ];
  for (const [name, pairs] of series) {
    const d = pathData(pairs);
    if (d) chart.append(svg("path", { class: `series ${name}`, d }));
  }
  for (const p of points.filter((point) => point.throttled > 0)) {
    const marker = svg("circle", { class: "throttle", cx: x(p.at), cy: load.top - 8, r: 3.5 });
    marker.append(svg("title", {}, `${p.throttled} throttling answer(s)`));
    chart.append(marker);
  }
}

async function loadCauses() {
  const jobId = state.jobId;
  try {
    const page = await api(`/jobs/${encodeURIComponent(jobId)}/causes`);
    if (state.jobId === jobId) drawCauses($("causes-chart"), page.causes);
  } catch (error) {
    failed(error);
  }
}

function drawCauses(chart, causes) {
  const ROW = 26, W = 800, label = 300;
  chart.replaceChildren();
  chart.dataset.causes = String(causes.length);
  chart.setAttribute("viewBox", `0 0 ${W} ${Math.max(1, causes.length) * ROW + 8}`);
  if (!causes.length) {
    chart.append(svg("text", { x: 8, y: 20 }, "No failed tasks."));
    return;
  }
  const most = Math.max(...causes.map((c) => c.count));
  causes.forEach((cause, i) => {
    const name = `${cause.error_code || "(no code)"} · HTTP ${cause.http_status || "–"}`;
    const group = svg("g", { class: "cause", tabindex: 0, role: "button" });
    group.dataset.errorCode = cause.error_code;
    group.dataset.httpStatus = cause.http_status;
    group.classList.toggle("selected", !!state.cause && state.cause.error_code === cause.error_code
      && state.cause.http_status === cause.http_status);
    const width = Math.max(2, (W - label - 80) * (cause.count / most));
    group.append(svg("text", { x: 8, y: i * ROW + 20 }, name));
    group.append(svg("rect", { x: label, y: i * ROW + 7, width, height: ROW - 10, rx: 2 }));
    group.append(svg("text", { x: label + width + 6, y: i * ROW + 20 }, cause.count.toLocaleString()));
    group.append(svg("title", {}, `e.g. ${cause.example_key}: ${cause.example_message}`));
    const pick = () => filterByCause({ error_code: cause.error_code, http_status: cause.http_status }, name);
    group.addEventListener("click", pick);
    group.addEventListener("keydown", (event) => { if (event.key === "Enter") pick(); });
    chart.append(group);
  });
}

function filterByCause(cause, name) {
  state.cause = cause;
  $("cause-name").textContent = name || "";
  $("cause-filter").hidden = !cause;
  for (const group of $("causes-chart").querySelectorAll("g.cause")) {
    group.classList.toggle("selected", !!cause && group.dataset.errorCode === cause.error_code
      && group.dataset.httpStatus === cause.http_status);
  }
  loadFailures(false);
}

function startLive(jobId) {
  stopLive();
  if (!window.EventSource || state.sseErrors >= MAX_SSE_ERRORS) {
    pollJob(jobId);
    return;
  }
  $("job-live").textContent = "live";
  const source = new EventSource(`${API}/jobs/${encodeURIComponent(jobId)}/events`);
  state.source = source;
  source.addEventListener("progress", (event) => {
    state.sseErrors = 0;
    renderJob(JSON.parse(event.data));
  });
  source.addEventListener("end", (event) => {
    source.close();
    const reason = JSON.parse(event.data).reason;
    $("job-live").textContent = reason === "terminal" ? "" : "reconnecting";
    if (reason === "timeout" && state.jobId === jobId) startLive(jobId);  // bounded streams
  });
  source.onerror = () => {
    // EventSource retries by itself; after repeated failures fall back to polling.
    state.sseErrors += 1;
    if (state.sseErrors >= MAX_SSE_ERRORS) {
      source.close();
      pollJob(jobId);
    }
  };
}

async function pollJob(jobId, generation = state.generation) {
  stopLive();
  $("job-live").textContent = "polling";
  await refreshJob(generation);
  if (!isCurrent(generation)) return;
  if (state.jobId === jobId && $("job-status").textContent
      && !["Complete", "Cancelled", "Failed"].includes($("job-status").textContent)) {
    state.timer = setTimeout(() => pollJob(jobId, generation), JOB_POLL_MS);
  } else {
    $("job-live").textContent = "";
  }
}

async function loadFailures(more) {
  const query = new URLSearchParams({ limit: String(FAILURES_PAGE) });
  if (more && state.failuresAfter != null) query.set("after", String(state.failuresAfter));
  if (state.cause) {
    query.set("error_code", state.cause.error_code);
    query.set("http_status", state.cause.http_status);
  }
  try {
    const page = await api(`/jobs/${encodeURIComponent(state.jobId)}/failures?${query}`);
    const body = $("failures-body");
    if (!more) body.replaceChildren();
    for (const f of page.failures) {
      const row = document.createElement("tr");
      cell(row, f.position + 1);
      cell(row, `${f.bucket}/${f.key}`, "key");
      cell(row, f.error_code);
      cell(row, f.http_status);
      cell(row, f.message);
      body.append(row);
    }
    state.failuresAfter = page.next_after;
    $("more-failures").hidden = page.next_after == null;
    $("failures-empty").hidden = body.children.length > 0;
  } catch (error) {
    failed(error);
  }
}

async function act(path, body) {
  try {
    const detail = await api(`/jobs/${encodeURIComponent(state.jobId)}/${path}`,
      { method: "POST", body: JSON.stringify(body || {}) });
    renderJob(detail);
    notice("");
    if (!detail.terminal && !state.source && !state.timer) startLive(state.jobId);
  } catch (error) {
    failed(error);
  }
}

// -- pipelines ----------------------------------------------------------------------------------

const PIPELINE_POLL_MS = 3000;
const PIPELINE_CHART_BUCKETS = 60;  // the chart shows at least this many buckets (an hour of minutes)
// Colours of file states in the pipeline chart: finished well, failed, dropped, in progress.
const STATE_COLOURS = { archived: "#218a4b", deleted: "#57b27a", left: "#9fd4b2", errored: "#c0362c",
  superseded: "#98a2b3", gone: "#667085", received: "#9cbcf0", processing: "#2f6fde", processed: "#1d4fa8" };

function countsText(counts) {
  const parts = Object.entries(counts || {}).map(([name, n]) => `${name} ${n.toLocaleString()}`);
  return parts.length ? parts.join(" · ") : "none yet";
}

async function showPipelines(generation) {
  if (!isCurrent(generation)) return;
  show("pipelines-view");
  try {
    const page = await api("/pipelines");
    if (!isCurrent(generation)) return;
    const body = $("pipelines-body");
    body.replaceChildren();
    for (const p of page.pipelines) {
      const row = document.createElement("tr");
      row.dataset.pipeline = p.name;
      const link = document.createElement("a");
      link.href = `#/pipelines/${encodeURIComponent(p.name)}`;
      link.textContent = p.name;
      cell(row, link);
      cell(row, p.source);
      cell(row, p.pending);
      cell(row, countsText(p.files));
      body.append(row);
    }
    $("pipelines-empty").hidden = page.pipelines.length > 0;
    notice("");
  } catch (error) {
    if (isCurrent(generation)) failed(error);
    return;
  }
  state.timer = setTimeout(() => showPipelines(generation), PIPELINE_POLL_MS);
}

async function showPipeline(name, generation) {
  if (!isCurrent(generation)) return;
  show("pipeline-view");
  const path = `/pipelines/${encodeURIComponent(name)}`;
  try {
    const [info, timeline, recent] = await Promise.all(
      [api(path), api(`${path}/timeline`), api(`${path}/failures`)]);
    if (!isCurrent(generation)) return;
    $("pipeline-name").textContent = info.name;
    $("pipeline-source").textContent = info.source;
    $("pipeline-on-success").textContent = info.archive ? `${info.on_success} → ${info.archive}` : info.on_success;
    $("pipeline-error").textContent = info.error || "–";
    $("pipeline-pending").textContent = info.pending;
    $("pipeline-files").textContent = countsText(info.files);
    $("replay").disabled = !info.error;
    drawStates($("pipeline-chart"), timeline);
    renderPipelineFailures(recent.failures);
    notice("");
  } catch (error) {
    if (isCurrent(generation)) failed(error);
    return;
  }
  state.timer = setTimeout(() => showPipeline(name, generation), PIPELINE_POLL_MS);
}

// Stacked bars: for each time bucket, how many files reached each state in it.
function drawStates(chart, timeline) {
  chart.replaceChildren();
  const buckets = timeline.buckets;
  chart.dataset.buckets = String(buckets.length);
  const states = [...new Set(buckets.flatMap((b) => Object.keys(b.counts)))].sort();
  const legend = $("pipeline-legend");
  legend.replaceChildren();
  for (const name of states) {
    const key = document.createElement("span");
    key.className = "key";
    key.style.background = STATE_COLOURS[name] || "#667085";
    legend.append(key, name);
  }
  if (!buckets.length) {
    chart.append(svg("text", { x: 12, y: 24 }, "No files in the last 24 hours."));
    return;
  }
  const W = 800, left = 48, right = 12, top = 10, bottom = 190;
  // The axis ends now and spans at least PIPELINE_CHART_BUCKETS buckets, so bars sit in time.
  const step = timeline.bucket_s;
  const t1 = Math.max(buckets[buckets.length - 1].at + step, Math.ceil(Date.now() / 1000 / step) * step);
  const t0 = Math.min(buckets[0].at, t1 - PIPELINE_CHART_BUCKETS * step);
  const x = (t) => left + (W - left - right) * ((t - t0) / Math.max(t1 - t0, 1));
  const most = Math.max(1, ...buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0)));
  const width = Math.max(2, x(t0 + timeline.bucket_s) - x(t0) - 2);
  chart.append(svg("line", { class: "axis", x1: left, x2: W - right, y1: bottom, y2: bottom }));
  chart.append(svg("text", { x: left - 6, y: top + 8, "text-anchor": "end" }, most.toLocaleString()));
  chart.append(svg("text", { x: left - 6, y: bottom, "text-anchor": "end" }, "0"));
  chart.append(svg("text", { x: left, y: 210 }, new Date(t0 * 1000).toLocaleString()));
  chart.append(svg("text", { x: W - right, y: 210, "text-anchor": "end" }, new Date(t1 * 1000).toLocaleTimeString()));
  for (const bucket of buckets) {
    let y = bottom;
    for (const name of states) {
      const n = bucket.counts[name] || 0;
      if (!n) continue;
      const h = (bottom - top) * (n / most);
      y -= h;
      const bar = svg("rect", { class: "state", x: x(bucket.at) + 1, y, width, height: h, fill: STATE_COLOURS[name] || "#667085" });
      bar.dataset.state = name;
      bar.append(svg("title", {}, `${new Date(bucket.at * 1000).toLocaleTimeString()}: ${n} ${name}`));
      chart.append(bar);
    }
  }
}

function renderPipelineFailures(failures) {
  const body = $("pipeline-failures-body");
  body.replaceChildren();
  for (const f of failures) {
    const row = document.createElement("tr");
    cell(row, `${f.bucket}/${f.key}`, "key");
    cell(row, [f.error_code, f.http_status, f.message].filter(Boolean).join(" · "));
    cell(row, f.attempts);
    relativeTime(cell(row, ""), new Date(f.updated * 1000).toISOString());
    const record = document.createElement("pre");
    record.className = "record";
    // Only operators get records; others see why not (the server's `withheld`).
    record.textContent = f.record == null ? (f.withheld || "–") : JSON.stringify(f.record, null, 2);
    cell(row, record);
    body.append(row);
  }
  $("pipeline-failures-empty").hidden = failures.length > 0;
}

async function replay(event) {
  event.preventDefault();
  const name = $("pipeline-name").textContent;
  try {
    const done = await api(`/pipelines/${encodeURIComponent(name)}/replay`,
      { method: "POST", body: JSON.stringify({ prefix: $("replay-prefix").value }) });
    notice("");
    $("replay-result").textContent = `Replayed ${done.replayed} object(s)${done.more ? "; more are left: replay again" : ""}.`;
  } catch (error) {
    failed(error);
  }
}

// -- routing ------------------------------------------------------------------------------------

async function route() {
  const generation = nextGeneration();
  if ($("logout").hidden) {
    try {
      const who = await api("/session");
      if (!isCurrent(generation)) return;
      setIdentity(who);
    } catch (error) {
      if (!isCurrent(generation)) return;
      if (error instanceof HttpError && error.status === 401) showLogin(); else notice(error.message);
      return;
    }
  }
  const job = location.hash.match(/^#\/jobs\/(.+)$/);
  const pipeline = location.hash.match(/^#\/pipelines\/(.+)$/);
  if (job) showJob(decodeURIComponent(job[1]), generation);
  else if (pipeline) showPipeline(decodeURIComponent(pipeline[1]), generation);
  else if (location.hash === "#/pipelines") showPipelines(generation);
  else showList(false, generation);
}

function init() {
  for (const status of STATUSES) $("status-filter").append(new Option(status, status));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", () => showList(false, nextGeneration()));
  $("status-filter").addEventListener("change", () => showList(false, nextGeneration()));
  $("next-page").addEventListener("click", () => showList(true, nextGeneration()));
  $("more-failures").addEventListener("click", () => loadFailures(true));
  $("clear-cause").addEventListener("click", () => filterByCause(null));
  $("replay-form").addEventListener("submit", replay);
  $("confirm").addEventListener("click", () => act("confirm", { reason: "confirmed in the dashboard" }));
  $("cancel").addEventListener("click", () => act("cancel", { reason: "cancelled in the dashboard" }));
  $("priority-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act("priority", { priority: Number($("priority-input").value) });
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", init);

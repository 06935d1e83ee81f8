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

const state = { timer: null, source: null, sseErrors: 0, jobId: null, nextToken: null,
  failuresAfter: null, failedSeen: -1 };

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
  for (const id of ["login-view", "list-view", "job-view"]) $(id).hidden = id !== view;
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
  stopLive();
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

function cell(row, text, className) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text); else td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  row.append(td);
  return td;
}

// -- job list -----------------------------------------------------------------------------------

async function showList(append) {
  show("list-view");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if ($("status-filter").value) query.append("status", $("status-filter").value);
  if (append && state.nextToken) query.set("next_token", state.nextToken);
  try {
    const page = await api(`/jobs?${query}`);
    renderJobs(page.jobs, append);
    state.nextToken = page.next_token;
    $("next-page").hidden = !page.next_token;
    notice("");
  } catch (error) {
    failed(error);
    return;
  }
  // Only the first page refreshes itself: later pages would shift under the reader.
  if (!append) state.timer = setTimeout(() => showList(false), LIST_POLL_MS);
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
    cell(row, when(job.CreationTime));
    body.append(row);
  }
  $("jobs-empty").hidden = body.children.length > 0;
}

// -- one job ------------------------------------------------------------------------------------

function showJob(jobId) {
  show("job-view");
  state.jobId = jobId;
  state.failedSeen = -1;
  $("job-id").textContent = jobId;
  $("failures-body").replaceChildren();
  refreshJob().then(() => startLive(jobId));
}

async function refreshJob() {
  try {
    renderJob(await api(`/jobs/${encodeURIComponent(state.jobId)}`));
    notice("");
  } catch (error) {
    failed(error);
  }
}

function renderJob(detail) {
  const job = detail.job, p = detail.progress;
  badge($("job-status"), job.Status);
  setBar($("job-bar"), p);
  $("job-operation").textContent = Object.keys(job.Operation)[0];
  $("job-total").textContent = p.total == null ? "–" : p.total;
  $("job-succeeded").textContent = p.succeeded;
  $("job-failed").textContent = p.failed;
  $("job-rate").textContent = p.rate_per_s == null ? "–" : `${p.rate_per_s} tasks/s`;
  $("job-eta").textContent = detail.terminal ? "ended" : duration(p.eta_s);
  $("job-priority").textContent = job.Priority;
  $("job-created").textContent = when(job.CreationTime);
  $("job-report").textContent = detail.report_manifest || "not written yet";
  $("job-reason").textContent = job.StatusUpdateReason
    || (job.FailureReasons || []).map((f) => `${f.FailureCode}: ${f.FailureReason}`).join("; ") || "–";
  $("confirm").disabled = job.Status !== "Suspended";
  $("cancel").disabled = detail.terminal || job.Status === "Cancelling";
  if (document.activeElement !== $("priority-input")) $("priority-input").value = job.Priority;
  if (p.failed !== state.failedSeen) {
    state.failedSeen = p.failed;
    loadFailures(false);
  }
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

async function pollJob(jobId) {
  stopLive();
  $("job-live").textContent = "polling";
  await refreshJob();
  if (state.jobId === jobId && $("job-status").textContent
      && !["Complete", "Cancelled", "Failed"].includes($("job-status").textContent)) {
    state.timer = setTimeout(() => pollJob(jobId), JOB_POLL_MS);
  } else {
    $("job-live").textContent = "";
  }
}

async function loadFailures(more) {
  const query = new URLSearchParams({ limit: String(FAILURES_PAGE) });
  if (more && state.failuresAfter != null) query.set("after", String(state.failuresAfter));
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

// -- routing ------------------------------------------------------------------------------------

async function route() {
  stopLive();
  if ($("logout").hidden) {
    try {
      setIdentity(await api("/session"));
    } catch (error) {
      if (error instanceof HttpError && error.status === 401) showLogin(); else notice(error.message);
      return;
    }
  }
  const match = location.hash.match(/^#\/jobs\/(.+)$/);
  if (match) showJob(decodeURIComponent(match[1])); else showList(false);
}

function init() {
  for (const status of STATUSES) $("status-filter").append(new Option(status, status));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", () => { stopLive(); showList(false); });
  $("status-filter").addEventListener("change", () => { stopLive(); showList(false); });
  $("next-page").addEventListener("click", () => { stopLive(); showList(true); });
  $("more-failures").addEventListener("click", () => loadFailures(true));
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

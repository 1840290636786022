// Ladle's status page: live fleet snapshots over SSE, charts of the last 15 minutes, a job's
// timeline and events, batches and their lines, a streaming chat box and an embeddings box.
"use strict";

// Every request the page makes goes through apiFetch, so credentials (an Authorization
// header) can be added in one place. SSE is read with fetch, not EventSource, for the same reason.
const apiHeaders = () => ({});

function apiFetch(path, options = {}) {
  return fetch(path, { ...options, headers: { ...apiHeaders(), ...(options.headers || {}) } });
}

// Read a Server-Sent Events response; calls onEvent({event, data, id}) for each frame.
async function readSse(path, onEvent, options = {}) {
  const response = await apiFetch(path, { ...options, headers: { Accept: "text/event-stream", ...(options.headers || {}) } });
  if (!response.ok) {
    const body = await response.text();
    throw new Error(`${response.status}: ${body}`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = { event: "message", data: [], id: null };
      for (const line of buffer.slice(0, end).split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") frame.data.push(text);
        else if (field === "event") frame.event = text;
        else if (field === "id") frame.id = text;
      }
      buffer = buffer.slice(end + 2);
      if (frame.data.length) onEvent({ ...frame, data: frame.data.join("\n") });
    }
  }
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

// The server's clock minus the browser's (from each snapshot's time): samples and job timestamps
// are the server's, so "now" on a chart is too.
let clockOffset = 0;
const serverNow = () => Date.now() / 1000 + clockOffset;

const time = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString() : "");
const preciseTime = (seconds) =>
  new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 });

function duration(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function renderWorkers(workers, down) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren(
    ...workers.map((w) => {
      const models = w.loaded_models || [];
      const busy = models.reduce((sum, m) => sum + (m.rows_in_use || 0), 0);
      return el(
        "tr",
        { class: "worker", "data-name": w.name, "data-lane": w.lane },
        el("td", {}, w.name),
        el("td", { class: "device" }, w.device),
        el("td", {}, w.lane),
        el("td", { class: "models wrap" }, models.map((m) => m.name).join(", ") || "—"),
        el("td", { class: "rows" }, `${busy} / ${w.batch_rows ?? "?"}`),
        el("td", {}, `${w.active_jobs ?? 0} / ${w.capacity ?? "?"}`),
      );
    }),
  );
  document.getElementById("down-workers").textContent = down.length ? `Down: ${down.join(", ")}` : "";
}

function renderQueues(queues) {
  const entries = Object.entries(queues);
  document.getElementById("queues").replaceChildren(
    ...(entries.length
      ? entries.map(([name, depth]) => el("li", { class: "queue", "data-name": name }, `${name}: `, el("b", {}, depth)))
      : [el("li", { class: "muted" }, "no queues")]),
  );
}

function renderDownloads(downloads) {
  const list = document.getElementById("downloads");
  if (!downloads.length) {
    list.replaceChildren(el("li", { class: "muted" }, "none recently"));
    return;
  }
  list.replaceChildren(
    ...downloads.map((d) => {
      const p = d.progress || { bytes_done: 0, bytes_total: 0 };
      const percent = p.bytes_total ? (100 * p.bytes_done) / p.bytes_total : d.status === "succeeded" ? 100 : 0;
      return el(
        "li",
        { class: "download", "data-id": d.id, "data-status": d.status },
        `${d.model} `,
        el("progress", { max: 100, value: percent }),
        ` ${percent.toFixed(1)}% `,
        ...(p.phase === "building" && d.status === "running" ? [`building ${p.stage || ""} `] : []),
        el("span", { class: `status-${d.status}` }, d.status),
      );
    }),
  );
}

// ---- Models: the chat box offers generation models, the embeddings box embedding models.

let shownModels = "";

function fillSelect(select, names) {
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  if (names.includes(chosen)) select.value = chosen;
  select.disabled = !names.length;
}

function renderModels(models) {
  const text = JSON.stringify(models);
  if (text === shownModels) return; // rebuilding the options would close an open drop-down
  shownModels = text;
  const of = (kind) => models.filter((m) => m.kind === kind).map((m) => m.id);
  fillSelect(document.getElementById("chat-model"), of("generation"));
  fillSelect(document.getElementById("embed-model"), of("embedding"));
  document.getElementById("chat-send").disabled = !of("generation").length;
  document.getElementById("embed-send").disabled = !of("embedding").length;
}

// ---- Jobs: the recent list, and the selected job's timeline and events.

let selectedJob = null;
let jobEventsAbort = null;
let jobsById = new Map();
// The selected job as last read (its record's timestamps), and when this page saw its first token.
let jobDetail = null;

function renderJobs(jobs) {
  jobsById = new Map(jobs.map((j) => [j.id, j]));
  const none = el("tr", {}, el("td", { colSpan: 6, class: "muted" }, "none yet"));
  document.querySelector("#jobs tbody").replaceChildren(
    ...(jobs.length ? [] : [none]),
    ...jobs.map((j) => {
      const row = el(
        "tr",
        { class: `job${j.id === selectedJob ? " selected" : ""}`, "data-id": j.id, "data-status": j.status },
        el("td", { title: j.id }, el("code", {}, j.id.slice(0, 12))),
        el("td", {}, j.kind),
        el("td", {}, j.model),
        el("td", { class: `status status-${j.status}`, title: j.error || "" }, j.status),
        el("td", {}, j.worker || ""),
        el("td", {}, time(j.created_at)),
      );
      row.addEventListener("click", () => showJob(j.id));
      return row;
    }),
  );
  const listed = jobsById.get(selectedJob);
  if (jobDetail && jobDetail.id === selectedJob && listed) {
    Object.assign(jobDetail, { status: listed.status, started_at: listed.started_at, finished_at: listed.finished_at });
    if (listed.first_token_at) Object.assign(jobDetail, { first_token_at: listed.first_token_at, first_token_note: "" });
    renderTimeline();
  }
}

const TERMINAL_JOB = new Set(["succeeded", "failed", "cancelled"]);
const TERMINAL_EVENTS = new Set(["done", "error"]);

function renderTimeline() {
  const j = jobDetail;
  const status = document.getElementById("job-detail-status");
  status.className = `status-${j.status}`;
  status.textContent = j.status;
  const steps = [
    ["queued", j.created_at, "created"],
    ["started", j.started_at, j.worker ? `on ${j.worker}` : ""],
    ["first-token", j.first_token_at, j.first_token_note],
    ["finished", j.finished_at, TERMINAL_JOB.has(j.status) ? j.status : ""],
  ];
  document.getElementById("job-timeline").replaceChildren(
    ...steps.map(([step, at, note]) =>
      el(
        "li",
        { "data-step": step, "data-known": String(Boolean(at)), "data-at": at || "" },
        el("b", {}, step.replace("-", " ")),
        at ? (step === "queued" ? preciseTime(at) : `+${duration(Math.max(0, at - j.created_at))}`) : "—",
        note ? el("span", { class: "muted" }, ` (${note})`) : "",
      ),
    ),
  );
  // The bar: waiting in the queue, then running (its colour the outcome), the first token marked.
  const bar = document.getElementById("job-timeline-bar");
  const width = bar.clientWidth || 600;
  bar.setAttribute("viewBox", `0 0 ${width} 28`);
  const end = j.finished_at || serverNow();
  const span = Math.max(end - j.created_at, 1e-3);
  const x = (at) => (width * (at - j.created_at)) / span;
  const parts = [];
  const started = j.started_at || (j.finished_at ? j.finished_at : null);
  parts.push(svgEl("rect", { class: "queued", x: 0, y: 6, height: 16, width: Math.max(1, x(started || end)) }));
  if (j.started_at) {
    const kind = TERMINAL_JOB.has(j.status) ? j.status : "running";
    parts.push(svgEl("rect", { class: kind, x: x(j.started_at), y: 6, height: 16, width: Math.max(1, x(end) - x(j.started_at)) }));
  }
  if (j.first_token_at) {
    const at = x(Math.min(j.first_token_at, end));
    parts.push(svgEl("line", { class: "first-token", x1: at, x2: at, y1: 2, y2: 26 }));
  }
  bar.replaceChildren(...parts);
}

async function showJob(jobId) {
  selectedJob = jobId;
  if (jobEventsAbort) jobEventsAbort.abort();
  jobEventsAbort = new AbortController();
  const signal = jobEventsAbort.signal;
  document.getElementById("job-detail").hidden = false;
  document.getElementById("job-detail-id").textContent = jobId;
  const output = document.getElementById("job-events");
  output.textContent = "";
  document.querySelectorAll("tr.job").forEach((row) => row.classList.toggle("selected", row.dataset.id === jobId));
  const response = await apiFetch(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal }).catch(() => null);
  if (selectedJob !== jobId) return;
  const record = response && response.ok ? await response.json() : jobsById.get(jobId);
  if (!record) {
    output.append(el("div", { class: "error" }, `job ${jobId} is not on record`));
    return;
  }
  // A finished generation's record says when its first token came (first_token_at); for a job
  // still running the page notes when it sees the first delta (exact for a job still queued when
  // opened; for a running one its first delta may be a replay, so later).
  const queued = record.status === "queued";
  const live = !TERMINAL_JOB.has(record.status);
  jobDetail = {
    ...record,
    first_token_at: record.first_token_at || null,
    first_token_note: record.first_token_at ? "" : live ? "waiting" : "none",
  };
  renderTimeline();
  readSse(`/v1/jobs/${encodeURIComponent(jobId)}/events`, (frame) => {
    if (frame.event === "delta" && live && !jobDetail.first_token_at) {
      jobDetail.first_token_at = serverNow();
      jobDetail.first_token_note = queued ? "seen by this page" : "seen by this page: at the latest";
      renderTimeline();
    } else if (TERMINAL_EVENTS.has(frame.event) && !jobDetail.first_token_at && live) {
      jobDetail.first_token_note = "none";
      renderTimeline();
    }
    output.append(el("div", { class: "job-event", "data-type": frame.event }, `${frame.event} ${frame.data}`));
  }, { signal }).catch((error) => {
    if (error.name !== "AbortError") output.append(el("div", { class: "error" }, String(error)));
  });
}

// ---- Batches: the list with counts and progress, and the selected batch's lines.

let selectedBatch = null;
// The files whose lines are shown, so a batch that finishes (its output file appears) is read again.
let shownBatchFiles = "";
const MAX_LINES = 100;

function batchProgress(b) {
  const c = b.request_counts || { total: 0, completed: 0, failed: 0 };
  return { ...c, done: c.completed + c.failed, percent: c.total ? (100 * (c.completed + c.failed)) / c.total : 0 };
}

function renderBatches(batches) {
  document.getElementById("no-batches").hidden = batches.length > 0;
  document.querySelector("#batches tbody").replaceChildren(
    ...batches.map((b) => {
      const p = batchProgress(b);
      const counts = el(
        "span",
        { class: "counts", "data-completed": p.completed, "data-failed": p.failed, "data-total": p.total },
        `${p.completed + p.failed}/${p.total}${p.failed ? ` (${p.failed} failed)` : ""}`,
      );
      const row = el(
        "tr",
        { class: `batch${b.id === selectedBatch ? " selected" : ""}`, "data-id": b.id, "data-status": b.status },
        el(
          "td",
          { title: b.id },
          el("code", {}, b.id.slice(6, 18)),
          el("div", { class: "muted" }, `${b.endpoint.replace("/v1/", "")} · ${time(b.created_at)}`),
        ),
        el(
          "td",
          { class: "wrap" },
          el("span", { class: `status status-${b.status}` }, b.status.replace("_", " ")),
          " ",
          counts,
          el("progress", { max: 100, value: p.percent }),
        ),
      );
      row.addEventListener("click", () => showBatch(b));
      return row;
    }),
  );
  const selected = batches.find((b) => b.id === selectedBatch);
  if (selected && batchFiles(selected) !== shownBatchFiles) showBatch(selected);
}

function batchFiles(b) {
  return JSON.stringify([b.output_file_id, b.error_file_id, b.input_file_id]);
}

// The first `limit` lines of a file, read as they stream: a batch's file can be large.
async function fileLines(fileId, limit) {
  const response = await apiFetch(`/v1/files/${encodeURIComponent(fileId)}/content`);
  if (!response.ok) throw new Error(`${response.status}: ${(await response.text()).slice(0, 200)}`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const lines = [];
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0 && lines.length < limit) {
      if (buffer.slice(0, end).trim()) lines.push(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
    }
    if (lines.length >= limit) {
      reader.cancel();
      return { lines, more: true };
    }
    if (done) {
      if (buffer.trim()) lines.push(buffer);
      return { lines, more: false };
    }
  }
}

// What a line of a batch's output or error file says, in a few words.
function outputSummary(line) {
  const body = line.response?.body || {};
  if (line.error) return line.error.message || JSON.stringify(line.error);
  if (body.error) return body.error.message || JSON.stringify(body.error);
  const choice = body.choices?.[0];
  if (choice) return choice.message?.content ?? choice.text ?? "";
  if (Array.isArray(body.data)) return `${body.data.length} embedding(s) of ${body.data[0]?.embedding?.length ?? "?"} dimensions`;
  return JSON.stringify(body).slice(0, 200);
}

// What a line of a batch's input asks, in a few words.
function inputSummary(line) {
  const body = line.body || {};
  const last = body.messages?.[body.messages.length - 1];
  const asked = last ? (typeof last.content === "string" ? last.content : JSON.stringify(last.content)) : body.prompt ?? body.input;
  return `${body.model || ""}: ${typeof asked === "string" ? asked : JSON.stringify(asked)}`.slice(0, 300);
}

async function showBatch(batch) {
  selectedBatch = batch.id;
  shownBatchFiles = batchFiles(batch);
  document.querySelectorAll("tr.batch").forEach((row) => row.classList.toggle("selected", row.dataset.id === batch.id));
  document.getElementById("batch-detail").hidden = false;
  document.getElementById("batch-detail-id").textContent = batch.id;
  const source = document.getElementById("batch-detail-source");
  const body = document.querySelector("#batch-lines tbody");
  // Its results once it has any; until then what it was asked.
  const files = [
    ["output", batch.output_file_id],
    ["error", batch.error_file_id],
  ].filter(([, id]) => id);
  if (!files.length) files.push(["input", batch.input_file_id]);
  source.textContent = `(${files.map(([kind]) => kind).join(" and ")} file${files.length > 1 ? "s" : ""})`;
  const rows = [];
  let more = false;
  try {
    for (const [kind, fileId] of files) {
      const read = await fileLines(fileId, MAX_LINES - rows.length);
      more ||= read.more;
      for (const text of read.lines) {
        let line;
        try {
          line = JSON.parse(text);
        } catch {
          line = { custom_id: "?", unparsed: text };
        }
        rows.push(batchLineRow(kind, line));
      }
    }
  } catch (error) {
    rows.push(el("tr", { class: "error" }, el("td", { colSpan: 3 }, String(error))));
  }
  if (selectedBatch !== batch.id) return;
  if (more) rows.push(el("tr", {}, el("td", { colSpan: 3, class: "muted" }, `first ${MAX_LINES} lines shown`)));
  body.replaceChildren(...rows);
}

function batchLineRow(kind, line) {
  const jobId = line.response?.request_id;
  const code = kind === "input" ? "pending" : line.response?.status_code ?? (line.error ? "error" : "");
  const said = line.unparsed ?? (kind === "input" ? inputSummary(line) : outputSummary(line));
  // Whitespace alone (a small random model's output) is shown escaped rather than as nothing.
  const text = said.trim() ? said : JSON.stringify(said);
  const row = el(
    "tr",
    { class: `batch-line source-${kind}`, "data-source": kind, "data-custom-id": line.custom_id ?? "", ...(jobId ? { "data-job": jobId } : {}) },
    el("td", {}, el("code", {}, line.custom_id ?? "")),
    el("td", { class: kind === "error" ? "status-failed" : kind === "output" ? "status-succeeded" : "muted" }, code),
    el("td", { class: "wrap" }, text),
  );
  // A line's job is on record for a while: its timeline and events show below the jobs.
  if (jobId) row.addEventListener("click", () => showJob(jobId));
  return row;
}

// ---- Charts: the fleet's samples of the last 15 minutes, redrawn as samples arrive.

const HISTORY_S = 900;
let samples = [];
// Seconds between samples (the history says; until it has, the server's default).
let sampleInterval = 2;

function mergeSamples(incoming) {
  const byTime = new Map(samples.map((s) => [s.time, s]));
  for (const sample of incoming) byTime.set(sample.time, sample);
  const sorted = [...byTime.values()].sort((a, b) => a.time - b.time);
  const since = (sorted.length ? sorted[sorted.length - 1].time : 0) - HISTORY_S;
  samples = sorted.filter((s) => s.time >= since);
  renderCharts();
}

// Series of a chart: [{name, values: [number|null per sample], dashed?}].
function chartSeries() {
  const names = (pick) => [...new Set(samples.flatMap((s) => Object.keys(pick(s) || {})))].sort();
  const tokenModels = names((s) => s.tokens_per_s);
  const queues = names((s) => s.queues);
  const ttftModels = names((s) => s.ttft);
  const statuses = names((s) => s.ended_per_min);
  return {
    "chart-tokens": tokenModels.map((m) => ({ name: m, values: samples.map((s) => s.tokens_per_s?.[m] ?? 0) })),
    "chart-queues": queues.map((q) => ({ name: q, values: samples.map((s) => s.queues?.[q] ?? null) })),
    "chart-jobs": [
      { name: "queued", values: samples.map((s) => s.jobs?.queued ?? null) },
      { name: "running", values: samples.map((s) => s.jobs?.running ?? null) },
      // Rates dashed, apart from the counts.
      ...statuses.map((status) => ({
        name: `${status} /min`,
        dashed: true,
        values: samples.map((s) => s.ended_per_min?.[status] ?? 0),
      })),
    ],
    "chart-ttft": ttftModels.flatMap((m) => [
      { name: `${m} p50`, color: m, values: samples.map((s) => s.ttft?.[m]?.p50 ?? null) },
      { name: `${m} p95`, color: m, dashed: true, values: samples.map((s) => s.ttft?.[m]?.p95 ?? null) },
    ]),
  };
}

// A colour per name, the same wherever it appears (a model is one colour on every chart); job
// statuses in the colours the job list uses.
const colourIndex = new Map();
const STATUS_COLOURS = { queued: "--wait", running: "--run", succeeded: "--ok", failed: "--bad", cancelled: "--warn" };
function colour(name) {
  const status = STATUS_COLOURS[name.replace(" /min", "")];
  if (status) return `var(${status})`;
  if (!colourIndex.has(name)) colourIndex.set(name, colourIndex.size % 8);
  return `var(--c${colourIndex.get(name)})`;
}

function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= value);
}

const formatValue = (v) => (v === null ? "—" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : +v.toFixed(2) + "");

function renderCharts() {
  const series = chartSeries();
  const now = serverNow();
  for (const [id, lines] of Object.entries(series)) drawChart(document.getElementById(id), lines, now);
}

function drawChart(figure, lines, now) {
  const svg = figure.querySelector("svg");
  const unit = figure.dataset.unit;
  const width = svg.clientWidth || 300;
  const height = svg.clientHeight || 150;
  const pad = { left: 38, right: 8, top: 8, bottom: 18 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const start = now - HISTORY_S;
  const top = niceCeiling(Math.max(0, ...lines.flatMap((l) => l.values.filter((v) => v !== null))));
  const x = (t) => pad.left + (plotW * (t - start)) / HISTORY_S;
  const y = (v) => pad.top + plotH - (plotH * v) / top;
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const at = y(top * fraction);
    parts.push(svgEl("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: at, y2: at }));
    parts.push(svgEl("text", { class: "tick", x: pad.left - 4, y: at + 3, "text-anchor": "end" }, formatValue(top * fraction)));
  }
  for (const minutes of [15, 10, 5, 0]) {
    const label = minutes ? `−${minutes} min` : "now";
    const anchor = minutes === 15 ? "start" : minutes ? "middle" : "end";
    parts.push(svgEl("text", { class: "tick", x: x(now - minutes * 60), y: height - 4, "text-anchor": anchor }, label));
  }
  parts.push(svgEl("text", { class: "tick", x: pad.left + 2, y: pad.top + 9 }, unit));
  // A line breaks where a value is missing or sampling paused (more than three intervals apart).
  const gap = 3 * sampleInterval;
  let points = 0;
  for (const line of lines) {
    let d = "";
    let previous = null;
    line.values.forEach((value, i) => {
      const t = samples[i].time;
      if (value === null || t < start) {
        previous = null;
        return;
      }
      d += `${previous === null || t - previous > gap ? "M" : "L"}${x(t).toFixed(1)},${y(value).toFixed(1)}`;
      previous = t;
      points += 1;
    });
    const known = line.values.filter((v) => v !== null);
    parts.push(
      svgEl("path", {
        class: `line${line.dashed ? " dashed" : ""}`,
        d: d || "M0,0",
        stroke: colour(line.color || line.name),
        "data-series": line.name,
        "data-points": known.length,
        "data-last": known.length ? known[known.length - 1] : "",
        "data-max": known.length ? Math.max(...known) : "",
      }),
    );
  }
  if (!samples.length) {
    parts.push(svgEl("text", { class: "empty", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle" }, "no samples yet"));
  }
  svg.replaceChildren(...parts);
  svg.dataset.points = String(points);
  svg.dataset.samples = String(samples.length);
  svg.dataset.first = samples.length ? String(samples[0].time) : "";
  svg.dataset.lastTime = samples.length ? String(samples[samples.length - 1].time) : "";
  figure.querySelector(".legend").replaceChildren(
    ...lines.map((line) => {
      const known = line.values.filter((v) => v !== null);
      const swatch = el("span", { class: `swatch${line.dashed ? " dashed" : ""}` });
      swatch.style.borderColor = colour(line.color || line.name);
      return el("li", { "data-series": line.name }, swatch, `${line.name} `, el("b", {}, formatValue(known.length ? known[known.length - 1] : null)));
    }),
  );
}

async function loadHistory(since = null) {
  const query = since ? `?since=${since}` : "";
  const response = await apiFetch(`/v1/fleet/history${query}`);
  if (!response.ok) return;
  const history = await response.json();
  sampleInterval = history.interval_s;
  mergeSamples(history.samples);
}

// ---- The fleet stream: snapshots and samples; on reconnect, the history missed meanwhile.

function renderSnapshot(snapshot) {
  clockOffset = snapshot.time - Date.now() / 1000;
  renderWorkers(snapshot.workers, snapshot.down_workers || []);
  renderQueues(snapshot.queues);
  renderDownloads(snapshot.downloads);
  renderJobs(snapshot.jobs);
  renderBatches(snapshot.batches || []);
  renderModels(snapshot.models || []);
  document.getElementById("updated").textContent = `updated ${time(snapshot.time)}`;
}

async function followFleet() {
  const state = document.getElementById("connection");
  for (;;) {
    const history = loadHistory(samples.length ? samples[samples.length - 1].time : null).catch((error) =>
      console.warn("fleet history failed", error),
    );
    try {
      await readSse("/v1/fleet/events", (frame) => {
        state.dataset.state = "live";
        state.textContent = "live";
        if (frame.event === "snapshot") renderSnapshot(JSON.parse(frame.data));
        else if (frame.event === "sample") mergeSamples([JSON.parse(frame.data)]);
      });
    } catch (error) {
      console.warn("fleet stream failed", error);
    }
    await history;
    state.dataset.state = "connecting";
    state.textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// ---- The chat and embeddings boxes.

async function sendChat(event) {
  event.preventDefault();
  const input = document.getElementById("chat-input");
  const output = document.getElementById("chat-output");
  const button = document.getElementById("chat-send");
  const body = {
    model: document.getElementById("chat-model").value,
    messages: [{ role: "user", content: input.value }],
    max_tokens: Number(document.getElementById("chat-max-tokens").value) || 64,
    stream: true,
  };
  output.textContent = "";
  output.dataset.state = "streaming";
  output.dataset.chunks = "0";
  button.disabled = true;
  try {
    await readSse("/v1/chat/completions", (frame) => {
      if (frame.data === "[DONE]") return;
      const chunk = JSON.parse(frame.data);
      if (chunk.error) throw new Error(chunk.error.message);
      const text = chunk.choices?.[0]?.delta?.content;
      if (text) {
        output.textContent += text;
        output.dataset.chunks = String(Number(output.dataset.chunks) + 1);
      }
    }, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    output.dataset.state = "done";
  } catch (error) {
    output.textContent += `\n[error] ${error.message}`;
    output.dataset.state = "error";
  } finally {
    button.disabled = false;
  }
}

async function sendEmbedding(event) {
  event.preventDefault();
  const output = document.getElementById("embed-output");
  const button = document.getElementById("embed-send");
  const body = { model: document.getElementById("embed-model").value, input: document.getElementById("embed-input").value };
  output.dataset.state = "running";
  output.textContent = "";
  button.disabled = true;
  try {
    const response = await apiFetch("/v1/embeddings", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error?.message || response.status);
    const vector = answer.data[0].embedding;
    output.dataset.dimensions = String(vector.length);
    output.textContent = `${vector.length} dimensions, ${answer.usage?.prompt_tokens ?? "?"} tokens\n[${vector
      .slice(0, 8)
      .map((v) => v.toFixed(4))
      .join(", ")}, …]`;
    output.dataset.state = "done";
  } catch (error) {
    output.textContent = `[error] ${error.message}`;
    output.dataset.state = "error";
  } finally {
    button.disabled = false;
  }
}

document.getElementById("chat-form").addEventListener("submit", sendChat);
document.getElementById("embed-form").addEventListener("submit", sendEmbedding);
// Charts and the timeline are drawn to their boxes' pixel size: redraw when it changes.
window.addEventListener("resize", () => {
  renderCharts();
  if (jobDetail) renderTimeline();
});
renderCharts();
followFleet();

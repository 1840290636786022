// Ladle's status page: live fleet snapshots over SSE, a job's events, and a streaming chat box.
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

const time = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleTimeString() : "");

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
        el("td", { class: "models" }, models.map((m) => m.name).join(", ") || "—"),
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

let selectedJob = null;
let jobEventsAbort = null;

function renderJobs(jobs) {
  document.querySelector("#jobs tbody").replaceChildren(
    ...jobs.map((j) => {
      const row = el(
        "tr",
        { class: `job${j.id === selectedJob ? " selected" : ""}`, "data-id": j.id, "data-status": j.status },
        el("td", {}, el("code", {}, j.id.slice(0, 12))),
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
}

function showJob(jobId) {
  selectedJob = jobId;
  if (jobEventsAbort) jobEventsAbort.abort();
  jobEventsAbort = new AbortController();
  document.getElementById("job-detail").hidden = false;
  document.getElementById("job-detail-id").textContent = jobId;
  const output = document.getElementById("job-events");
  output.textContent = "";
  document.querySelectorAll("tr.job").forEach((row) => row.classList.toggle("selected", row.dataset.id === jobId));
  readSse(`/v1/jobs/${encodeURIComponent(jobId)}/events`, (frame) => {
    const line = el("div", { class: "job-event", "data-type": frame.event }, `${frame.event} ${frame.data}`);
    output.append(line);
  }, { signal: jobEventsAbort.signal }).catch((error) => {
    if (error.name !== "AbortError") output.append(el("div", { class: "error" }, String(error)));
  });
}

function renderSnapshot(snapshot) {
  renderWorkers(snapshot.workers, snapshot.down_workers || []);
  renderQueues(snapshot.queues);
  renderDownloads(snapshot.downloads);
  renderJobs(snapshot.jobs);
  document.getElementById("updated").textContent = `updated ${time(snapshot.time)}`;
}

async function followFleet() {
  const state = document.getElementById("connection");
  for (;;) {
    try {
      await readSse("/v1/fleet/events", (frame) => {
        state.dataset.state = "live";
        state.textContent = "live";
        if (frame.event === "snapshot") renderSnapshot(JSON.parse(frame.data));
      });
    } catch (error) {
      console.warn("fleet stream failed", error);
    }
    state.dataset.state = "connecting";
    state.textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function loadModels() {
  const response = await apiFetch("/v1/models");
  if (!response.ok) return;
  const models = (await response.json()).data || [];
  document.getElementById("chat-model").replaceChildren(...models.map((m) => el("option", { value: m.id }, m.id)));
}

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

document.getElementById("chat-form").addEventListener("submit", sendChat);
loadModels();
followFleet();

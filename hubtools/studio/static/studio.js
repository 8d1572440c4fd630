// hubtools studio: one client of the studio's JSON API (no inline script: the page's CSP forbids it).
"use strict";

async function api(method, path, body, isForm) {
  const options = { method: method, headers: {} };
  if (body !== undefined) {
    if (isForm) { options.body = body; } else { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: "the studio answered " + response.status }));
  if (!response.ok) { throw new Error(data.error || ("HTTP " + response.status)); }
  return data;
}

function el(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) { node.setAttribute(key, value); }
  if (text !== undefined) { node.textContent = text; }
  return node;
}

function showError(node, error) {
  node.hidden = !error;
  node.textContent = error ? String(error.message || error) : "";
}

// ---- new run ---------------------------------------------------------------------------------

function newRunPage(root) {
  let jobId = null;
  const errorBox = document.getElementById("error");
  const field = (id) => document.getElementById(id);

  async function ensureJob() {
    if (!jobId) { jobId = (await api("POST", "/api/jobs")).id; root.dataset.job = jobId; }
    return jobId;
  }

  function showConcept(report) {
    field("concept").hidden = false;
    const counts = report.counts;
    field("concept-counts").textContent = counts
      ? `${counts.accepted} accepted, ${counts.rejected} rejected, ${counts.duplicate} duplicate, ${counts.ignored} ignored` +
        (report.resolution ? `, at ${report.resolution}×${report.resolution} px` : "")
      : "nothing usable yet";
    const sheet = field("contact-sheet");
    if (report.contact_sheet) { sheet.src = report.contact_sheet; sheet.hidden = false; } else { sheet.hidden = true; }
    const body = field("concept-files").querySelector("tbody");
    body.replaceChildren();
    for (const entry of report.entries) {
      const row = el("tr", { "data-status": entry.status });
      row.append(el("td", {}, entry.label), el("td"), el("td", {}, entry.reason || ""));
      row.children[1].append(el("span", { class: "status status-" + entry.status }, entry.status));
      body.append(row);
    }
  }

  field("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const files = field("photos").files;
    if (!files.length) { return; }
    const form = new FormData();
    for (const file of files) { form.append("photos", file, file.name); }
    field("concept-status").textContent = `Uploading ${files.length} file(s) and preparing them…`;
    try {
      const id = await ensureJob();
      const resolution = Number(field("resolution").value) || 512;
      showConcept(await api("POST", `/api/jobs/${id}/photos?resolution=${resolution}`, form, true));
      field("concept-status").textContent = "Prepared as the run will use them.";
    } catch (error) { field("concept-status").textContent = error.message; }
  });

  field("dataset-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    field("concept-status").textContent = "Reading the dataset and preparing it…";
    try {
      const id = await ensureJob();
      showConcept(await api("POST", `/api/jobs/${id}/dataset`,
        { name: field("dataset").value, resolution: Number(field("resolution").value) || 512 }));
      field("concept-status").textContent = "Prepared as the run will use them.";
    } catch (error) { field("concept-status").textContent = error.message; }
  });

  // The identifier, checked as you type against the chosen base model's tokenizers.
  let checkTimer = null;
  async function checkIdentifier() {
    const text = field("identifier").value.trim();
    const out = field("identifier-check");
    if (!text) { out.textContent = "Type one to see how the base model's tokenizers split it."; out.className = "check muted small"; return; }
    const query = new URLSearchParams({ text: text, base_model: field("base-model").value, class_noun: field("class-noun").value });
    try {
      const report = await api("GET", "/api/identifier?" + query);
      if (field("identifier").value.trim() !== text) { return; }
      out.replaceChildren();
      out.append(el("span", { class: "token-count", id: "token-count", "data-tokens": report.num_tokens },
        `${report.num_tokens} token${report.num_tokens === 1 ? "" : "s"}`), `: ${report.tokens.join(" + ")}`);
      for (const split of report.other_tokenizers) { out.append(el("br"), `${split.tokenizer}: ${split.num_tokens} (${split.tokens.join(" + ")})`); }
      for (const warning of report.warnings) { out.append(el("br"), "⚠ " + warning); }
      if (report.ok) { out.append(el("br"), "looks good: one rare token with no known meaning"); }
      out.className = "check small " + (report.ok ? "good" : "warn");
    } catch (error) { out.textContent = error.message; out.className = "check small warn"; }
  }
  field("identifier").addEventListener("input", () => { clearTimeout(checkTimer); checkTimer = setTimeout(checkIdentifier, 250); });
  field("class-noun").addEventListener("change", checkIdentifier);

  api("GET", "/api/identifier/suggest").then((suggestions) => {
    for (const suggestion of suggestions) {
      const chip = el("button", { class: "chip", type: "button" }, suggestion.text);
      chip.addEventListener("click", () => { field("identifier").value = suggestion.text; checkIdentifier(); });
      field("suggestions").append(chip);
    }
  }).catch(() => {});

  // Settings: the family's defaults of the chosen base model fill every field the user has not touched
  // (typed into or changed), and only the answer for the latest base model counts: reading a model can be
  // slow, and a late answer for an earlier one must not undo what the user typed since.
  const inputs = [...root.querySelectorAll("[data-key]")];
  const touched = new Set();
  for (const input of inputs) {
    for (const type of ["input", "change"]) { input.addEventListener(type, () => touched.add(input.dataset.key)); }
  }
  let defaultsAsked = 0;
  async function fillDefaults() {
    const asked = ++defaultsAsked;
    const baseModel = field("base-model").value;
    try {
      const defaults = await api("GET", "/api/defaults?" + new URLSearchParams({ base_model: baseModel }));
      if (asked !== defaultsAsked) { return; }
      field("family").textContent = defaults.family ? `family: ${defaults.family}` : (defaults.note || "");
      field("family").dataset.baseModel = baseModel;
      for (const input of inputs) {
        const key = input.dataset.key;
        if (touched.has(key) || !(key in defaults.settings)) { continue; }
        const value = defaults.settings[key];
        if (input.type === "checkbox") { input.checked = Boolean(value); } else { input.value = value === null ? "" : value; }
      }
    } catch (error) { if (asked === defaultsAsked) { field("family").textContent = error.message; } }
  }
  field("base-model").addEventListener("change", () => { fillDefaults(); checkIdentifier(); });
  fillDefaults();

  function settings() {
    const values = {};
    for (const input of inputs) {
      if (input.type === "checkbox") { values[input.dataset.key] = input.checked; continue; }
      if (input.value === "") { continue; }
      values[input.dataset.key] = input.type === "number" ? Number(input.value) : input.value;
    }
    if (values["training.learning_rate"] !== undefined) { values["training.learning_rate"] = Number(values["training.learning_rate"]); }
    return { settings: values, set: field("advanced").value };
  }

  field("show-plan").addEventListener("click", async () => {
    try {
      const id = await ensureJob();
      const plan = await api("POST", `/api/jobs/${id}/plan`, settings());
      field("plan").textContent = plan.plan;
      field("plan").hidden = false;
      showError(errorBox, null);
    } catch (error) { showError(errorBox, error); }
  });

  field("start").addEventListener("click", async () => {
    field("start").disabled = true;
    try {
      const id = await ensureJob();
      const started = await api("POST", `/api/jobs/${id}/start`, settings());
      window.location.assign(started.url);
    } catch (error) { showError(errorBox, error); field("start").disabled = false; }
  });
}

// ---- a job -----------------------------------------------------------------------------------

function lossChart(canvas) {
  const points = [];
  function draw() {
    const context = canvas.getContext("2d");
    const width = canvas.width, height = canvas.height, pad = 28;
    context.clearRect(0, 0, width, height);
    if (points.length < 2) { return; }
    const steps = points.map((p) => p[0]), losses = points.map((p) => p[1]);
    const minX = Math.min(...steps), maxX = Math.max(...steps);
    const minY = Math.min(...losses), maxY = Math.max(...losses);
    const x = (v) => pad + (width - 2 * pad) * (v - minX) / Math.max(maxX - minX, 1);
    const y = (v) => height - pad - (height - 2 * pad) * (v - minY) / Math.max(maxY - minY, 1e-9);
    context.strokeStyle = "#e5e7eb"; context.beginPath(); context.moveTo(pad, pad); context.lineTo(pad, height - pad);
    context.lineTo(width - pad, height - pad); context.stroke();
    context.fillStyle = "#6b7280"; context.font = "11px system-ui";
    context.fillText(maxY.toPrecision(3), 2, pad - 6); context.fillText(minY.toPrecision(3), 2, height - pad + 14);
    context.fillText("step " + maxX, width - pad - 40, height - 8);
    context.strokeStyle = "#4f46e5"; context.lineWidth = 1.5; context.beginPath();
    points.forEach((p, i) => (i ? context.lineTo(x(p[0]), y(p[1])) : context.moveTo(x(p[0]), y(p[1]))));
    context.stroke();
  }
  return { add(step, loss) { points.push([step, loss]); draw(); }, count: () => points.length };
}

function jobPage(root) {
  const id = root.dataset.job;
  const field = (name) => document.getElementById(name);
  const chart = lossChart(field("loss"));
  const log = field("log");

  // Paths inside the job's folder are shown from there on ("run/images/..."), a table result as its rows.
  const jobFolder = new RegExp(`[^\\s"']*/jobs/${id}/`, "g");
  function resultText(data) {
    if (Array.isArray(data.rows)) {
      return (data.title ? data.title + ": " : "") + data.rows.map((row) => row.filter(Boolean).join(" ")).join(" · ");
    }
    if (data.url) { return data.url; }
    if (data.text) { return data.text; }
    return Object.entries(data).map(([key, value]) => `${key} ${typeof value === "string" ? value : JSON.stringify(value)}`).join(" · ");
  }
  function addLog(text) {
    log.textContent += text.replace(jobFolder, "") + "\n";
    log.scrollTop = log.scrollHeight;
  }

  // An image the run wrote (again, when `rewritten`: a grid re-rendered under the same name is reloaded).
  function addGrid(path, rewritten) {
    const src = `/jobs/${id}/files/run/${path}`;
    const name = path.split("/").pop();
    const grids = field("grids");
    const existing = [...grids.querySelectorAll("img")].find((img) => img.alt === name);
    if (existing) { if (rewritten) { existing.src = src + "?v=" + Date.now(); } return; }
    const figure = el("figure");
    figure.append(el("img", { src: src, alt: name, "data-kind": "grid" }), el("figcaption", {}, name));
    grids.prepend(figure);
  }

  const source = new EventSource(`/api/jobs/${id}/events`);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    switch (event.event) {
      case "progress": {
        const percent = event.total ? Math.round(100 * event.done / event.total) : 0;
        if (event.what === "training") {
          field("progress").value = percent;
          field("progress").dataset.percent = percent;
          field("progress-label").textContent = `training ${event.done}/${event.total} · ${percent} %`;
        } else {
          field("stage").textContent = `${event.what} ${event.done}/${event.total}`;
        }
        break;
      }
      case "metric":
        if (event.values && typeof event.values.loss === "number") {
          chart.add(event.step, event.values.loss);
          field("loss-value").textContent = `step ${event.step}: ${event.values.loss.toFixed(4)}`;
        }
        break;
      case "artifact":
        if (/\.(png|jpe?g|webp)$/i.test(event.path || "") && !["checkpoint", "contact_sheet"].includes(event.kind)) { addGrid(event.path, true); }
        addLog(`${event.kind}: ${event.path}`);
        break;
      case "stage": field("stage").textContent = event.message; addLog("==> " + event.message); break;
      case "note": addLog("note: " + event.message); break;
      case "warning": addLog("warning: " + event.message); break;
      case "error": addLog("error: " + event.message); break;
      case "result": addLog("result: " + resultText(event.data || {})); break;
      default: break;
    }
  };
  source.addEventListener("job", async (message) => {
    const job = JSON.parse(message.data);
    const state = field("job-state");
    state.textContent = job.state;
    state.className = "state state-" + job.state;
    field("publish-link").hidden = job.state !== "done";
    field("cancel").disabled = !["queued", "running"].includes(job.state);
    field("resume").disabled = !["cancelled", "failed"].includes(job.state);
    showError(field("job-error"), job.state === "failed" ? job.error : null);
    if (job.state === "done") {
      const info = await api("GET", `/api/jobs/${id}`);
      for (const image of info.images.slice().reverse()) { addGrid("images/" + image, false); }
    }
    root.dataset.state = job.state;  // the page shows this state completely (its grids listed)
  });
  field("cancel").addEventListener("click", () => api("POST", `/api/jobs/${id}/cancel`).catch((e) => addLog(e.message)));
  field("resume").addEventListener("click", () => api("POST", `/api/jobs/${id}/resume`).catch((e) => addLog(e.message)));
}

// ---- publish ---------------------------------------------------------------------------------

function publishPage(root) {
  const id = root.dataset.job;
  const field = (name) => document.getElementById(name);
  const repo = field("repo-id");

  async function fillNamespace() {
    if (repo.value) { return; }
    try {
      const who = await api("GET", "/api/whoami?" + new URLSearchParams({ endpoint: field("target").value }));
      if (!repo.value && who.name) { repo.value = `${who.name}/${repo.dataset.name}`; previewCard(); }
    } catch (error) { /* no token for this endpoint: the user types the namespace */ }
  }

  // The hackathon check: before the push over what it would publish, then as `hackathon check` finds it on
  // the hub (that result stays until the repo changes or the next push).
  let hubChecked = false;
  function showCheck(check, where) {
    const list = field("hackathon-check");
    if (!list || !check) { return; }
    list.replaceChildren();
    list.dataset.source = where;
    list.dataset.passed = String(check.passed);
    for (const rule of check.rules) {
      const item = el("li", { class: rule.passed ? "pass" : "fail", "data-rule": rule.rule });
      item.append(el("strong", {}, rule.rule), `: ${rule.detail}`);
      if (!rule.passed && rule.fix) { item.append(el("br"), el("span", { class: "fix" }, "fix: " + rule.fix)); }
      list.append(item);
    }
    const failed = check.rules.filter((rule) => !rule.passed).length;
    const verdict = failed ? `${failed} of ${check.rules.length} rules fail` : `all ${check.rules.length} rules pass`;
    field("hackathon-summary").textContent = (where === "hub" ? `Checked on the hub: ${verdict}` : `Before the push: ${verdict}`);
    field("hackathon-summary").className = "small " + (failed ? "warn" : "good");
  }

  async function previewCard() {
    if (!repo.value) { return; }
    try {
      const card = await api("POST", `/api/jobs/${id}/card`, { repo_id: repo.value, private: field("private").checked });
      // Sanitised by the server with the local hub's own card sanitiser (nh3), as the hub renders cards.
      field("card-preview").innerHTML = card.html;
      if (!hubChecked) { showCheck(card.hackathon, "before"); }
      showError(field("push-error"), null);
    } catch (error) { showError(field("push-error"), error); }
  }

  function showPushed(job, events) {
    if (job.push_state === "pushed" && job.push_url) {
      field("model-url").href = job.push_url;
      field("model-url").textContent = job.push_url;
      field("model-link").hidden = false;
      field("push-status").textContent = "Pushed.";
      field("push").disabled = false;
    } else if (job.push_state === "failed") {
      showError(field("push-error"), job.error || "the push failed");
      field("push-status").textContent = "";
      field("push").disabled = false;
    } else if (job.push_state === "pushing") {
      field("push-status").textContent = "Pushing…";
    }
  }

  field("preview-card").addEventListener("click", previewCard);
  repo.addEventListener("change", () => { hubChecked = false; previewCard(); });
  field("private").addEventListener("change", () => { hubChecked = false; previewCard(); });
  field("target").addEventListener("change", () => { repo.value = ""; hubChecked = false; fillNamespace(); });
  field("push").addEventListener("click", async () => {
    field("push").disabled = true;
    hubChecked = false;
    showError(field("push-error"), null);
    try {
      await api("POST", `/api/jobs/${id}/push`, { repo_id: repo.value, endpoint: field("target").value, private: field("private").checked });
      field("push-status").textContent = "Pushing…";
    } catch (error) { showError(field("push-error"), error); field("push").disabled = false; }
  });

  const source = new EventSource(`/api/jobs/${id}/events`);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.event === "result" && event.data && Array.isArray(event.data.rules)) {
      hubChecked = true;
      showCheck(event.data, "hub");
    }
  };
  source.addEventListener("job", (message) => showPushed(JSON.parse(message.data)));
  if (repo.value) { previewCard(); } else { fillNamespace(); }
}

document.addEventListener("DOMContentLoaded", () => {
  const pages = { "new-run": newRunPage, "job-page": jobPage, "publish-page": publishPage };
  for (const [id, start] of Object.entries(pages)) {
    const root = document.getElementById(id);
    if (root) { start(root); }
  }
});

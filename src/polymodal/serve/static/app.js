// The polymodal page: builds its form from GET /v1/info, sends one row to /v1/predict (and to
// /v1/search when the service has an index) and shows each task's output. No framework.
"use strict";

const KEY_STORE = "polymodal.apiKey";
const FILE_KINDS = ["image", "audio"];
const values = {}; // field name -> value as JSON sends it (text, number, data URL)
let info = null;
let objectUrls = [];

const $ = (id) => document.getElementById(id);

/** An element with attributes (``text`` sets its text) and children. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function keyHeaders() {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { "X-API-Key": key } : {};
}

/** The service's ``detail`` as one line (FastAPI's validation errors are a list). */
function detailText(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return `the service answered ${status}`;
}

/** GET or POST (with a JSON body) ``path``; its JSON, or an Error holding the ``detail``. */
async function call(path, body) {
  const options = { headers: keyHeaders() };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`the service cannot be reached (${err.message})`);
  }
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${detailText(payload.detail, response.status)}`);
  return payload;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// --- the form ----------------------------------------------------------------------------

function readFile(input, file, preview) {
  const reader = new FileReader();
  reader.onload = () => {
    values[input.name] = reader.result;
    preview.replaceChildren(
      input.dataset.kind === "image"
        ? el("img", { src: reader.result, alt: `the ${input.name} given: ${file.name}` })
        : el("audio", { src: reader.result, controls: "", "aria-label": `the ${input.name} given` }),
      el("span", { text: file.name }),
    );
  };
  reader.readAsDataURL(file);
}

function fileField(name, kind) {
  const input = el("input", { id: `field-${name}`, name, type: "file", accept: `${kind}/*` });
  input.dataset.kind = kind;
  const preview = el("div", { class: "preview" });
  const zone = el(
    "label",
    { class: "drop", for: input.id },
    el("span", { text: `${name} (${kind}): drop a file here or choose one` }),
    input,
    preview,
  );
  input.addEventListener("change", () => input.files[0] && readFile(input, input.files[0], preview));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) readFile(input, file, preview);
  });
  return zone;
}

/** A sequence is typed as a JSON list; the service names what is wrong with it. */
function parsed(text, kind) {
  if (kind === "number") return Number(text);
  if (kind !== "sequence") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function valueField(name, kind) {
  const number = kind === "number";
  const input = el("input", { id: `field-${name}`, name, type: number ? "number" : "text" });
  if (number) input.step = "any";
  if (kind === "sequence") input.placeholder = "[0.5, 1.2, 0.8]";
  input.addEventListener("input", () => {
    const text = input.value.trim();
    if (text) values[name] = parsed(text, kind);
    else delete values[name];
  });
  return el("div", { class: "field" }, el("label", { for: input.id, text: `${name} (${kind})` }), input);
}

function buildForm() {
  const tasks = info.tasks.map((t) => `${t.name} (${t.type})`).join(", ");
  const index = info.index ? ` · an index of ${info.index.size} items by ${info.index.field}` : "";
  $("summary").textContent = `Tasks: ${tasks || "none"}${index}.`;
  $("fields").replaceChildren(
    ...info.inputs.map(({ name, kind }) =>
      FILE_KINDS.includes(kind) ? fileField(name, kind) : valueField(name, kind),
    ),
  );
  $("search-options").hidden = !info.index;
  $("run").disabled = false;
}

async function loadInfo() {
  showError("");
  try {
    info = await call("/v1/info");
    buildForm();
  } catch (err) {
    $("summary").textContent = "The model description could not be read.";
    $("key-box").open = err.message.startsWith("401");
    showError(err.message);
  }
}

// --- results ------------------------------------------------------------------------------

function bars(scores, testid) {
  const list = el("ul", { class: "bars", "data-testid": testid });
  for (const [label, p] of Object.entries(scores).sort((a, b) => b[1] - a[1])) {
    const bar = el("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    list.append(
      el("li", {}, el("span", { class: "label", text: label }), el("span", { class: "track" }, bar),
        el("span", { class: "value", text: p.toFixed(3) })),
    );
  }
  return list;
}

const RENDER = {
  caption: (out) => [
    el("p", { class: "big", "data-testid": "caption", text: out.caption }),
    el("p", { class: "muted", text: `score ${out.score.toFixed(3)}` }),
  ],
  vqa: (out) => {
    const top = out.top_answers || out.top || [];
    return [
      el("p", { class: "big", "data-testid": "answer", text: out.answer }),
      el("h3", { text: "Top answers" }),
      bars(Object.fromEntries(top.map((a) => [a.answer, a.score])), "answer-top"),
    ];
  },
  classify: (out) => [
    el("p", { class: "big", "data-testid": "label", text: out.label }),
    bars(out.probabilities, "probabilities"),
  ],
  regress: (out) => {
    const list = el("dl", { "data-testid": "values" });
    for (const [target, value] of Object.entries(out.values)) {
      list.append(el("dt", { text: target }), el("dd", { text: String(Number(value.toPrecision(6))) }));
    }
    return [list];
  },
  retrieve: (out) => [
    el("p", {
      class: "muted",
      text: Object.entries(out).map(([k, v]) => `${k}: ${v.length} numbers`).join(" · ") || "no embedding",
    }),
  ],
};

function taskCard(task, output) {
  const render = RENDER[task.type] || ((out) => [el("pre", { text: JSON.stringify(out, null, 1) })]);
  return el(
    "article",
    { class: "card", "data-testid": `task-${task.name}` },
    el("h2", { text: `${task.name} ` }, el("small", { text: task.type })),
    ...render(output),
  );
}

/** Fetch a thumbnail with the API key (an <img src> cannot send it) into ``img``. */
async function loadThumbnail(img, path) {
  try {
    const response = await fetch(path, { headers: keyHeaders() });
    if (!response.ok) throw new Error(String(response.status));
    const url = URL.createObjectURL(await response.blob());
    objectUrls.push(url);
    img.src = url;
  } catch {
    img.replaceWith(el("span", { class: "no-image", text: "no thumbnail" }));
  }
}

/** What an item says: its text that the index can be searched by (a caption). */
function itemText(item) {
  const texts = info.index.query_inputs.filter(({ kind }) => kind === "text").map(({ name }) => item[name]);
  return texts.find((v) => typeof v === "string" && v) || "";
}

function searchCard(field, results) {
  const list = el("ol", { class: "hits", "data-testid": "search-results" });
  for (const hit of results) {
    const text = itemText(hit.item);
    const entry = el("li", { "data-testid": "search-result" });
    if (hit.thumbnail) {
      const img = el("img", { "data-testid": "thumbnail", alt: text || `item ${hit.id}` });
      entry.append(img);
      loadThumbnail(img, hit.thumbnail);
    }
    entry.append(el("span", { class: "muted", text: `#${hit.id} · ${hit.score.toFixed(3)}` }),
      el("span", { text }));
    list.append(entry);
  }
  return el(
    "article",
    { class: "card wide" },
    el("h2", { text: "Search " }, el("small", { text: `by ${field}, ${results.length} results` })),
    results.length ? list : el("p", { text: "The index holds no items." }),
  );
}

/** The given column to search by (one the index takes), typed text first. */
function searchColumn() {
  const given = info.index.query_inputs.filter(({ name }) => name in values);
  return (given.find(({ kind }) => kind === "text") || given[0] || {}).name;
}

async function run(event) {
  event.preventDefault();
  showError("");
  if (!Object.keys(values).length) {
    showError("Give at least one input.");
    return;
  }
  $("run").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];
  const field = info.index && searchColumn();
  const k = Number($("k").value) || 8;
  const [predicted, searched] = await Promise.allSettled([
    call("/v1/predict", { inputs: values }),
    field ? call("/v1/search", { inputs: { [field]: values[field] }, k }) : Promise.resolve(null),
  ]);
  const cards = [];
  if (predicted.status === "fulfilled") {
    const outputs = predicted.value.outputs;
    cards.push(...info.tasks.filter((t) => t.name in outputs).map((t) => taskCard(t, outputs[t.name])));
  }
  if (searched.status === "fulfilled" && searched.value) {
    cards.push(searchCard(field, searched.value.results));
  }
  $("results").replaceChildren(...cards);
  $("results").removeAttribute("aria-busy");
  showError([predicted, searched].filter((r) => r.status === "rejected").map((r) => r.reason.message).join(" · "));
  $("run").disabled = false;
}

document.addEventListener("DOMContentLoaded", () => {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    if (key.value) localStorage.setItem(KEY_STORE, key.value);
    else localStorage.removeItem(KEY_STORE);
    loadInfo();
  });
  $("form").addEventListener("submit", run);
  loadInfo();
});

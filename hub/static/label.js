// The labeling page: one sample at a time from the hub's queue, keyboard first, for the project's task.
// Classify: 0-9 label, Enter confirm the prediction, a ambiguous, s skip, u undo, m more like this.
// Detect: the model's boxes are pre-labels, edited with the mouse (boxeditor.js) and the keys below;
//   Enter accepts the boxes as shown, n says "no objects".
// Both: other letters (or /) open a filter over the class names; Enter picks.
// Each verdict is stored at once; undo takes the last one back (DELETE /api/v1/labels/{id}).
"use strict";
const root = document.getElementById("labeler");
const $ = (id) => document.getElementById(id);
let LABELS = JSON.parse(root.dataset.labels);  // replaced by the project's classes
let TASK = "classify";
const COMMANDS = new Set(["a", "s", "u", "m", "n"]);  // letters that act rather than open the filter
let queue = [];          // samples still to show, best first
let current = null;      // the sample on screen
const history = [];      // [{item, kind: "label" | "boxes" | "ambiguous" | "skip"}], newest last
const skipped = new Set();
const drafts = new Map();  // sample_id -> its boxes as last edited: undo and skip bring them back
const counts = {labeled: 0, ambiguous: 0, skipped: 0};
let editor = null;

async function api(method, path, body) {
  const resp = await fetch(path, {method, credentials: "same-origin",
    headers: body ? {"Content-Type": "application/json"} : {}, body: body ? JSON.stringify(body) : undefined});
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw Object.assign(new Error(data.error || `${method} ${path}: HTTP ${resp.status}`), {status: resp.status});
  return data;
}

function say(text, bad) { const s = $("status"); s.textContent = text; s.className = bad ? "error" : ""; }
const className = (i) => LABELS[i] ?? `class ${i}`;

async function refill() {
  const data = await api("GET", "/api/v1/label-queue?limit=200");
  const held = new Set(history.map((h) => h.item.sample_id));
  queue = data.items.filter((it) => !skipped.has(it.sample_id) && !held.has(it.sample_id));
}

// -- one sample on screen -------------------------------------------------------------------------
function show(item) {
  current = item;
  root.dataset.current = item ? item.sample_id : "";  // which sample is on screen (tests wait on it)
  $("empty").hidden = !!item;
  $("frame").hidden = !item;
  ["predicted", "confidence", "top", "reasons", "meta"].forEach((id) => { $(id).textContent = ""; });
  document.querySelectorAll(".classes button").forEach((b) => b.classList.remove("predicted"));
  updateCounts();
  editor.load([], 1, 1, false);
  if (!item) return;
  const img = $("image");
  const known = item.width > 0 && item.height > 0;  // the stored image's size, from the hub
  if (TASK === "detect" && known) {
    $("frame").style.aspectRatio = `${item.width} / ${item.height}`;
    editor.load(startingBoxes(item, item.width, item.height), item.width, item.height, true);
  }
  img.onload = () => {
    if (current !== item || known && TASK === "detect") return;
    $("frame").style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;  // the frame keeps the image's shape
    editor.load(startingBoxes(item, img.naturalWidth, img.naturalHeight), img.naturalWidth, img.naturalHeight,
                TASK === "detect");
  };
  img.src = `/api/v1/samples/${encodeURIComponent(item.sample_id)}/image`;
  if (TASK === "detect") {
    $("predicted").textContent = `${item.detections.length} box${item.detections.length === 1 ? "" : "es"}`;
    $("confidence").textContent = "from the model";
  } else {
    $("predicted").textContent = LABELS[item.predicted] ?? item.predicted;
    $("confidence").textContent = `${(100 * item.confidence).toFixed(1)} %`;
    for (const [k, p] of item.top) {
      const li = document.createElement("li"); li.textContent = `${className(k)}  ${(100 * p).toFixed(1)} %`; $("top").append(li);
    }
    const btn = document.querySelector(`.classes button[data-class="${item.predicted}"]`);
    if (btn) btn.classList.add("predicted");
  }
  for (const r of item.reasons) { const li = document.createElement("li"); li.textContent = r; $("reasons").append(li); }
  const meta = {sample: item.sample_id, site: item.site, device: item.device_id, model: item.model_version,
                slice: item.slice, ...item.tags};
  for (const [k, v] of Object.entries(meta)) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    $("meta").append(dt, dd);
  }
}

// What the editor starts from: the boxes as last edited here, else a stored box label, else the
// model's detections (normalised x1, y1, x2, y2, score, class) as pre-labels.
function startingBoxes(item, w, h) {
  if (drafts.has(item.sample_id)) return drafts.get(item.sample_id);
  if (item.label && Array.isArray(item.label.boxes)) {
    return item.label.boxes.map((b) => ({cls: b.class, xyxy: [...b.xyxy], source: "human", score: null}));
  }
  return (item.detections || []).map(([x1, y1, x2, y2, score, cls]) =>
    ({cls: Math.round(cls), xyxy: [x1 * w, y1 * h, x2 * w, y2 * h], source: "model", score}));
}

function boxesChanged(ed) {  // the side list mirrors the editor; a click on a row selects its box
  const list = $("box-list"); list.textContent = "";
  ed.boxes.forEach((b, i) => {
    const li = document.createElement("li");
    li.dataset.boxIndex = i; li.dataset.class = b.cls;
    li.textContent = `${className(b.cls)} · ${b.source === "model" && b.score != null ? `model ${b.score.toFixed(2)}` : "yours"} · `
      + b.xyxy.map((v) => Math.round(v)).join(", ");
    if (i === ed.selected) li.className = "selected";
    li.onclick = () => ed.select(i);
    list.append(li);
  });
  if (!ed.boxes.length && current) list.textContent = "none: Enter stores “no objects”";
  document.querySelectorAll(".classes button").forEach((btn) =>
    btn.classList.toggle("chosen", TASK === "detect" && Number(btn.dataset.class) === ed.nextClass));
}

function updateCounts() {
  $("n-labeled").textContent = counts.labeled; $("n-ambiguous").textContent = counts.ambiguous;
  $("n-skipped").textContent = counts.skipped; $("n-queue").textContent = queue.length + (current ? 1 : 0);
}

async function next() {
  if (!queue.length) await refill();
  show(queue.shift() || null);
}

// -- verdicts -------------------------------------------------------------------------------------
let busy = false;  // one verdict at a time: keys pressed meanwhile wait for the next sample
async function act(kind, label) {
  if (busy || (!current && kind !== "undo")) return;
  busy = true;
  try {
    if (kind === "undo") return await undo();
    const item = current;
    if (TASK === "detect") drafts.set(item.sample_id, editor.snapshot());
    if (kind === "label") await api("POST", "/api/v1/labels", {labels: {[item.sample_id]: label}});
    if (kind === "boxes") await api("POST", "/api/v1/labels", {boxes: {[item.sample_id]: label}});
    if (kind === "ambiguous") await api("POST", "/api/v1/labels", {ambiguous: [item.sample_id]});
    if (kind === "skip") skipped.add(item.sample_id);
    history.push({item, kind});
    counts[kind === "label" || kind === "boxes" ? "labeled" : kind === "ambiguous" ? "ambiguous" : "skipped"] += 1;
    say(kind === "label" ? `${item.sample_id}: ${className(label)}`
      : kind === "boxes" ? `${item.sample_id}: ${label.length ? `${label.length} box${label.length === 1 ? "" : "es"}` : "no objects"}`
      : `${item.sample_id}: ${kind}`);
    await next();
  } catch (e) { say(e.message, true); } finally { busy = false; }
}

async function undo() {
  const last = history.pop();
  if (!last) { say("nothing to undo"); return; }
  if (last.kind === "skip") { skipped.delete(last.item.sample_id); counts.skipped -= 1; }
  else {
    try {
      await api("DELETE", `/api/v1/labels/${encodeURIComponent(last.item.sample_id)}`);
    } catch (e) { history.push(last); throw e; }
    counts[last.kind === "ambiguous" ? "ambiguous" : "labeled"] -= 1;
  }
  if (current) queue.unshift(current);
  show(last.item);
  say(`undone: ${last.item.sample_id} is back`);
}

// -- classes: buttons, number keys, and the filter for names ---------------------------------------
function chooseClass(i) {
  if (TASK !== "detect") { act("label", i); return; }
  const sel = editor.selected;
  editor.setClass(i);
  say(sel >= 0 ? `box ${sel}: ${className(i)}` : `next box: ${className(i)}`);
}

let filterPos = 0;
function filterMatches() {  // names holding the text, those starting with it first
  const q = $("filter-input").value.trim().toLowerCase();
  const hits = LABELS.map((name, i) => [String(name).toLowerCase(), i]).filter(([n]) => n.includes(q));
  return hits.sort(([a], [b]) => a.startsWith(q) === b.startsWith(q) ? 0 : a.startsWith(q) ? -1 : 1).map(([, i]) => i);
}

function renderFilter() {
  const list = $("filter-list"); list.textContent = "";
  const hits = filterMatches();
  filterPos = Math.min(filterPos, Math.max(0, hits.length - 1));
  hits.slice(0, 8).forEach((i, pos) => {
    const li = document.createElement("li");
    li.textContent = className(i); li.dataset.class = i;
    if (pos === filterPos) li.className = "active";
    li.onmousedown = (ev) => { ev.preventDefault(); closeFilter(); chooseClass(i); };
    list.append(li);
  });
  if (!hits.length) list.textContent = "no class by that name";
}

function openFilter(text) {
  $("filter").hidden = false;
  $("filter-input").value = text;
  filterPos = 0;
  renderFilter();
  $("filter-input").focus();
}

function closeFilter() { $("filter").hidden = true; $("filter-input").value = ""; $("filter-input").blur(); }

$("filter-input").addEventListener("input", () => { filterPos = 0; renderFilter(); });
$("filter-input").addEventListener("blur", () => { $("filter").hidden = true; });
$("filter-input").addEventListener("keydown", (ev) => {
  const hits = filterMatches();
  if (ev.key === "Enter") {
    closeFilter();
    if (hits.length) chooseClass(hits[filterPos]); else say("no class by that name", true);
  } else if (ev.key === "Escape") closeFilter();
  else if (ev.key === "ArrowDown" || ev.key === "Tab" && !ev.shiftKey) { filterPos = Math.min(filterPos + 1, Math.min(7, hits.length - 1)); renderFilter(); }
  else if (ev.key === "ArrowUp" || ev.key === "Tab") { filterPos = Math.max(0, filterPos - 1); renderFilter(); }
  else return;
  ev.preventDefault();
});

// -- keys -----------------------------------------------------------------------------------------
function commonKey(k) {
  if (k === "a") act("ambiguous");
  else if (k === "s") act("skip");
  else if (k === "u") act("undo");
  else if (k === "m") moreLikeThis();
  else if (k === "/" || /^\p{L}$/u.test(k) && !COMMANDS.has(k)) openFilter(k === "/" ? "" : k);
  else return false;
  return true;
}

function classifyKey(ev) {
  const k = ev.key;
  if (/^[0-9]$/.test(k) && Number(k) < LABELS.length) act("label", Number(k));
  else if (k === "Enter" && current) act("label", current.predicted);
  else if (k === "Backspace") act("undo");
  else return commonKey(k);
  return true;
}

function detectKey(ev) {
  const k = ev.key;
  if (/^[0-9]$/.test(k) && Number(k) < LABELS.length) chooseClass(Number(k));
  else if (k === "Enter") act("boxes", editor.result());
  else if (k === "n") act("boxes", []);
  else if (k === "Backspace" || k === "Delete") { if (!editor.remove()) say("select a box to delete it (click it, or Tab)"); }
  else if (k === "Escape") editor.select(-1);
  else if (k === "Tab") editor.cycle(ev.shiftKey ? -1 : 1);
  else if (k === "ArrowRight" || k === "ArrowDown") editor.cycle(1);
  else if (k === "ArrowLeft" || k === "ArrowUp") editor.cycle(-1);
  else return commonKey(k);
  return true;
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.tagName === "INPUT") return;
  if ((TASK === "detect" ? detectKey(ev) : classifyKey(ev)) !== false) ev.preventDefault();
});

// -- more like this -------------------------------------------------------------------------------
async function moreLikeThis() {
  if (!current) return;
  const item = current;
  try {
    const data = await api("GET", `/api/v1/samples/${encodeURIComponent(item.sample_id)}/similar?k=12`);
    const box = $("similar-items"); box.textContent = "";
    for (const it of data.items) {
      const fig = document.createElement("figure");
      const img = document.createElement("img"); img.src = `/api/v1/samples/${encodeURIComponent(it.sample_id)}/image`;
      img.alt = it.sample_id;
      const cap = document.createElement("figcaption");
      cap.textContent = `${TASK === "detect" ? `${it.detections.length} boxes` : className(it.predicted)} · d ${it.distance.toFixed(3)} · ${it.status}`;
      fig.append(img, cap); box.append(fig);
    }
    if (!data.items.length) box.textContent = "No other sample with an embedding at the hub yet.";
    $("similar-of").textContent = `of ${item.sample_id}`;
    $("similar").hidden = false;
    $("campaign").onclick = () => campaign(item.sample_id);
    $("campaign-status").textContent = "";
  } catch (e) {
    $("similar-items").textContent = e.message;  // e.g. a sample without an embedding
    $("similar").hidden = false;
  }
}

async function campaign(sampleId) {
  try {
    const c = await api("POST", "/api/v1/campaigns", {sample_ids: [sampleId]});
    $("campaign-status").textContent = `campaign ${c.campaign_id} started: agents keep frames like this one`;
  } catch (e) { $("campaign-status").textContent = e.message; }
}

// -- start: the project says the task and its classes ---------------------------------------------
async function start() {
  try {
    const project = await api("GET", "/api/v1/project");
    TASK = project.task === "detect" || project.task === "detection" ? "detect" : "classify";
    if (Array.isArray(project.classes) && project.classes.length) LABELS = project.classes;
  } catch (e) {
    if (e.status !== 404) throw e;  // only a hub without projects means classification with the page's classes
  }
  root.dataset.task = TASK;
  root.classList.add(TASK);
  editor = new BoxEditor($("overlay"), LABELS, boxesChanged);
  for (const [i, name] of LABELS.entries()) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.class = i;
    if (i < 10 && String(name) !== String(i)) {  // the key, unless the name says it already
      const k = document.createElement("kbd"); k.textContent = i; b.append(k, " ");
    }
    b.append(name);
    b.title = TASK === "detect" ? `class ${name} for the selected or next box` : `label ${name}`;
    b.onclick = () => { b.blur(); chooseClass(i); };  // blurred: Enter stays the page's key
    $("classes").append(b);
  }
  await next();
}
start().catch((e) => say(e.message, true));

// The labeling page: one sample at a time from the hub's queue, keyboard first.
// Keys: 0-9 label, Enter confirm the prediction, a ambiguous, s skip, u undo, m more like this.
// Each verdict is stored at once; undo takes the last one back (DELETE /api/v1/labels/{id}).
"use strict";
const root = document.getElementById("labeler");
const LABELS = JSON.parse(root.dataset.labels);
const $ = (id) => document.getElementById(id);
let queue = [];          // samples still to show, best first
let current = null;      // the sample on screen
const history = [];      // [{item, kind: "label" | "ambiguous" | "skip"}], newest last
const skipped = new Set();
const counts = {labeled: 0, ambiguous: 0, skipped: 0};

async function api(method, path, body) {
  const resp = await fetch(path, {method, credentials: "same-origin",
    headers: body ? {"Content-Type": "application/json"} : {}, body: body ? JSON.stringify(body) : undefined});
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || `${method} ${path}: HTTP ${resp.status}`);
  return data;
}

function say(text, bad) { const s = $("status"); s.textContent = text; s.className = bad ? "error" : ""; }

async function refill() {
  const data = await api("GET", "/api/v1/label-queue?limit=200");
  const held = new Set(history.map((h) => h.item.sample_id));
  queue = data.items.filter((it) => !skipped.has(it.sample_id) && !held.has(it.sample_id));
}

function show(item) {
  current = item;
  root.dataset.current = item ? item.sample_id : "";  // which sample is on screen (tests wait on it)
  $("empty").hidden = !!item;
  $("image").hidden = !item;
  ["predicted", "confidence", "top", "reasons", "meta"].forEach((id) => { $(id).textContent = ""; });
  document.querySelectorAll(".classes button").forEach((b) => b.classList.remove("predicted"));
  updateCounts();
  drawBoxes(null);
  if (!item) return;
  $("image").src = `/api/v1/samples/${encodeURIComponent(item.sample_id)}/image`;
  $("image").onload = () => drawBoxes(item);
  $("predicted").textContent = LABELS[item.predicted] ?? item.predicted;
  $("confidence").textContent = `${(100 * item.confidence).toFixed(1)} %`;
  for (const [k, p] of item.top) {
    const li = document.createElement("li"); li.textContent = `${LABELS[k]}  ${(100 * p).toFixed(1)} %`; $("top").append(li);
  }
  for (const r of item.reasons) { const li = document.createElement("li"); li.textContent = r; $("reasons").append(li); }
  const meta = {sample: item.sample_id, site: item.site, device: item.device_id, model: item.model_version,
                slice: item.slice, ...item.tags};
  for (const [k, v] of Object.entries(meta)) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    $("meta").append(dt, dd);
  }
  const btn = document.querySelector(`.classes button[data-class="${item.predicted}"]`);
  if (btn) btn.classList.add("predicted");
}

// Detection boxes (normalised x1, y1, x2, y2, score, class) are shown, not edited.
function drawBoxes(item) {
  const c = $("boxes"), img = $("image");
  c.width = img.naturalWidth || 1; c.height = img.naturalHeight || 1;
  const g = c.getContext("2d"); g.clearRect(0, 0, c.width, c.height);
  if (!item || !item.detections.length) return;
  g.lineWidth = Math.max(1, c.width / 160); g.strokeStyle = "#E69F00"; g.fillStyle = "#E69F00";
  g.font = `${Math.max(8, c.width / 20)}px sans-serif`;
  for (const [x1, y1, x2, y2, score, cls] of item.detections) {
    g.strokeRect(x1 * c.width, y1 * c.height, (x2 - x1) * c.width, (y2 - y1) * c.height);
    g.fillText(`${LABELS[cls] ?? cls} ${score.toFixed(2)}`, x1 * c.width + 2, y1 * c.height + c.width / 20);
  }
}

function updateCounts() {
  $("n-labeled").textContent = counts.labeled; $("n-ambiguous").textContent = counts.ambiguous;
  $("n-skipped").textContent = counts.skipped; $("n-queue").textContent = queue.length + (current ? 1 : 0);
}

async function next() {
  if (!queue.length) await refill();
  show(queue.shift() || null);
}

let busy = false;  // one verdict at a time: keys pressed meanwhile wait for the next sample
async function act(kind, label) {
  if (busy || (!current && kind !== "undo")) return;
  busy = true;
  try {
    if (kind === "undo") return await undo();
    const item = current;
    if (kind === "label") await api("POST", "/api/v1/labels", {labels: {[item.sample_id]: label}});
    if (kind === "ambiguous") await api("POST", "/api/v1/labels", {ambiguous: [item.sample_id]});
    if (kind === "skip") skipped.add(item.sample_id);
    history.push({item, kind});
    counts[kind === "label" ? "labeled" : kind === "ambiguous" ? "ambiguous" : "skipped"] += 1;
    say(kind === "label" ? `${item.sample_id}: ${LABELS[label]}` : `${item.sample_id}: ${kind}`);
    await next();
  } catch (e) { say(e.message, true); } finally { busy = false; }
}

async function undo() {
  const last = history.pop();
  if (!last) { say("nothing to undo"); return; }
  if (last.kind === "skip") { skipped.delete(last.item.sample_id); counts.skipped -= 1; }
  else {
    await api("DELETE", `/api/v1/labels/${encodeURIComponent(last.item.sample_id)}`);
    counts[last.kind === "label" ? "labeled" : "ambiguous"] -= 1;
  }
  if (current) queue.unshift(current);
  show(last.item);
  say(`undone: ${last.item.sample_id} is back`);
}

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
      cap.textContent = `${LABELS[it.predicted]} · d ${it.distance.toFixed(3)} · ${it.status}`;
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

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.tagName === "INPUT") return;
  const k = ev.key;
  if (/^[0-9]$/.test(k) && Number(k) < LABELS.length) act("label", Number(k));
  else if (k === "Enter" && current) act("label", current.predicted);
  else if (k === "a") act("ambiguous");
  else if (k === "s") act("skip");
  else if (k === "u" || k === "Backspace") act("undo");
  else if (k === "m") moreLikeThis();
  else return;
  ev.preventDefault();
});

for (const [i, name] of LABELS.entries()) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = name; b.dataset.class = i; b.title = `label ${name} (key ${i})`;
  b.onclick = () => act("label", i);
  $("classes").append(b);
}
next().catch((e) => say(e.message, true));

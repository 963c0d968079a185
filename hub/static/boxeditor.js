// The labeling page's box editor: boxes drawn over the frame, kept in the stored image's pixels.
// Mouse: drag on empty space (or inside a box that is not selected) draws a box; a click selects one;
// a drag inside the selected box moves it; a drag on one of its handles (corners, edges) resizes it.
// The page's keys call select / cycle / remove / setClass. Nothing here talks to the hub.
"use strict";

// Corners first: on a small box they win over the edges they overlap.
const HANDLES = {nw: [0, 0], ne: [1, 0], se: [1, 1], sw: [0, 1], n: [0.5, 0], e: [1, 0.5], s: [0.5, 1], w: [0, 0.5]};
const CURSORS = {nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize",
                 n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize"};
const GRAB_PX = 8;     // display pixels around a handle's centre that grab it
const DRAG_PX = 4;     // a press that travels less than this (display pixels) is a click
const MIN_BOX_PX = 4;  // a drawn box narrower or lower than this (display pixels) is a slip, not a box
const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#D55E00", "#0072B2", "#999999"];

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const inside = ([x1, y1, x2, y2], [x, y]) => x >= x1 && x <= x2 && y >= y1 && y <= y2;
const classColour = (cls) => PALETTE[cls % PALETTE.length];

class BoxEditor {
  // overlay: an element laid exactly over the image; classes: names by index;
  // onChange(editor): called after every edit and selection change.
  constructor(overlay, classes, onChange) {
    this.el = overlay;
    this.classes = classes;
    this.onChange = onChange || (() => {});
    this.boxes = [];        // [{cls, xyxy: [x1, y1, x2, y2] image pixels, source: "model" | "human", score}]
    this.selected = -1;
    this.nextClass = 0;     // the class of the next box drawn: the last one chosen
    this.width = 1; this.height = 1;
    this.editable = false;
    this.gesture = null;    // the press in progress
    overlay.addEventListener("pointerdown", (ev) => this.down(ev));
    overlay.addEventListener("pointermove", (ev) => this.drag(ev));
    overlay.addEventListener("pointerup", (ev) => this.up(ev));
    overlay.addEventListener("pointercancel", () => { this.gesture = null; this.render(); });
  }

  load(boxes, width, height, editable) {
    this.boxes = boxes.map((b) => ({...b, xyxy: [...b.xyxy]}));
    this.width = width || 1; this.height = height || 1;
    this.editable = editable;
    this.selected = -1;
    this.gesture = null;
    this.changed();
  }

  // -- what the page asks --------------------------------------------------------------------
  result() {  // the boxes as POST /api/v1/labels wants them, to a tenth of a pixel
    return this.boxes.map((b) => ({class: b.cls, xyxy: b.xyxy.map((v) => Math.round(v * 10) / 10)}));
  }

  snapshot() { return this.boxes.map((b) => ({...b, xyxy: [...b.xyxy]})); }

  select(i) { this.selected = i >= 0 && i < this.boxes.length ? i : -1; this.changed(); }

  cycle(step) {
    const n = this.boxes.length;
    if (!n) return;
    this.select(this.selected < 0 ? (step > 0 ? 0 : n - 1) : (this.selected + step + n) % n);
  }

  remove() {
    if (this.selected < 0) return false;
    this.boxes.splice(this.selected, 1);
    this.selected = -1;
    this.changed();
    return true;
  }

  // The selected box's class, if one is selected; and always the class of the next box drawn.
  setClass(cls) {
    this.nextClass = cls;
    const b = this.boxes[this.selected];
    if (b) { b.cls = cls; b.source = "human"; b.score = null; }
    this.changed();
  }

  // -- the mouse -----------------------------------------------------------------------------
  toImage(ev) {  // display -> stored image pixels, clamped to the image
    const r = this.el.getBoundingClientRect();
    return [clamp((ev.clientX - r.left) / r.width * this.width, 0, this.width),
            clamp((ev.clientY - r.top) / r.height * this.height, 0, this.height)];
  }

  scale() {  // display pixels per image pixel, across and down
    const r = this.el.getBoundingClientRect();
    return [r.width / this.width, r.height / this.height];
  }

  handleAt(p) {
    const b = this.boxes[this.selected];
    if (!b) return null;
    const [sx, sy] = this.scale(), [x1, y1, x2, y2] = b.xyxy;
    for (const [name, [fx, fy]] of Object.entries(HANDLES)) {
      const hx = x1 + fx * (x2 - x1), hy = y1 + fy * (y2 - y1);
      if (Math.abs((p[0] - hx) * sx) <= GRAB_PX && Math.abs((p[1] - hy) * sy) <= GRAB_PX) return name;
    }
    return null;
  }

  boxAt(p) {  // the smallest box under p, so that a box inside another stays reachable
    let best = -1, area = Infinity;
    this.boxes.forEach((b, i) => {
      const a = (b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]);
      if (inside(b.xyxy, p) && a < area) { best = i; area = a; }
    });
    return best;
  }

  kindAt(p) {
    const handle = this.handleAt(p);
    if (handle) return {kind: "resize", handle};
    if (this.selected >= 0 && inside(this.boxes[this.selected].xyxy, p)) return {kind: "move"};
    return {kind: "draw"};
  }

  down(ev) {
    if (!this.editable || ev.button !== 0) return;
    ev.preventDefault();
    this.el.setPointerCapture(ev.pointerId);  // the drag goes on outside the frame, clamped to it
    const p = this.toImage(ev);
    const sel = this.boxes[this.selected];
    this.gesture = {...this.kindAt(p), start: p, at: [ev.clientX, ev.clientY], moved: false,
                    orig: sel ? [...sel.xyxy] : null, drawn: -1};
  }

  drag(ev) {
    const g = this.gesture;
    if (!g) {  // hovering: say with the cursor what a press would do
      if (this.editable) {
        const k = this.kindAt(this.toImage(ev));
        this.el.style.cursor = k.kind === "resize" ? CURSORS[k.handle] : k.kind === "move" ? "move" : "crosshair";
      }
      return;
    }
    if (!g.moved && Math.hypot(ev.clientX - g.at[0], ev.clientY - g.at[1]) < DRAG_PX) return;
    g.moved = true;
    const p = this.toImage(ev), s = g.start;
    if (g.kind === "draw") {
      if (g.drawn < 0) {
        this.boxes.push({cls: this.nextClass, xyxy: [...s, ...s], source: "human", score: null});
        g.drawn = this.selected = this.boxes.length - 1;
      }
      this.boxes[g.drawn].xyxy = [Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])];
    } else {
      const b = this.boxes[this.selected], o = g.orig;
      if (g.kind === "move") {  // the whole box stays on the image
        const dx = clamp(p[0] - s[0], -o[0], this.width - o[2]), dy = clamp(p[1] - s[1], -o[1], this.height - o[3]);
        b.xyxy = [o[0] + dx, o[1] + dy, o[2] + dx, o[3] + dy];
      } else {  // resize: the handle's edges follow the pointer; dragged past the other side, the box flips
        let [x1, y1, x2, y2] = o;
        if (g.handle.includes("w")) x1 = p[0];
        if (g.handle.includes("e")) x2 = p[0];
        if (g.handle.includes("n")) y1 = p[1];
        if (g.handle.includes("s")) y2 = p[1];
        b.xyxy = [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)];
      }
      b.source = "human";
    }
    this.render();
  }

  up(ev) {
    const g = this.gesture;
    if (!g) return;
    this.gesture = null;
    if (!g.moved) {
      this.selected = this.boxAt(g.start);  // a click: select what is under it, or nothing
    } else if (g.drawn >= 0) {
      const [sx, sy] = this.scale(), b = this.boxes[g.drawn].xyxy;
      if ((b[2] - b[0]) * sx < MIN_BOX_PX || (b[3] - b[1]) * sy < MIN_BOX_PX) {
        this.boxes.splice(g.drawn, 1);
        this.selected = -1;
      }
    }
    this.changed();
  }

  // -- drawing -------------------------------------------------------------------------------
  changed() { this.render(); this.onChange(this); }

  render() {
    this.el.textContent = "";
    const pct = (v, whole) => `${(100 * v / whole).toFixed(3)}%`;
    this.boxes.forEach((b, i) => {
      const [x1, y1, x2, y2] = b.xyxy;
      const d = document.createElement("div");
      d.className = `box ${b.source}${i === this.selected ? " selected" : ""}`;
      d.dataset.boxIndex = i; d.dataset.class = b.cls; d.dataset.source = b.source;
      d.dataset.xyxy = b.xyxy.map((v) => v.toFixed(1)).join(",");
      Object.assign(d.style, {left: pct(x1, this.width), top: pct(y1, this.height),
                              width: pct(x2 - x1, this.width), height: pct(y2 - y1, this.height)});
      d.style.setProperty("--c", classColour(b.cls));
      const tag = document.createElement("span");
      tag.className = y1 / this.height < 0.08 ? "box-tag inside" : "box-tag";  // no room above: inside the box
      const name = this.classes[b.cls] ?? `class ${b.cls}`;
      tag.textContent = b.source === "model" && b.score != null ? `${name} ${b.score.toFixed(2)}` : name;
      d.append(tag);
      if (i === this.selected && this.editable) {
        for (const [h, [fx, fy]] of Object.entries(HANDLES)) {
          const s = document.createElement("span");
          s.className = "handle"; s.dataset.handle = h;
          s.style.left = `${100 * fx}%`; s.style.top = `${100 * fy}%`;
          d.append(s);
        }
      }
      this.el.append(d);
    });
  }
}

// The live chart of sales per minute: the hub's sales_per_minute window view.
//
// The orders API computes the window (a tumbling minute per product, summing the
// value of each stock reservation) and the hub serves it: GET
// /v1/views/sales_per_minute/sse sends a snapshot of every window, then each
// change, as the window's updates land (EventSource reconnects and resumes from
// the last message's id by itself). A window's key is "sku@start"; its value
// {key, start, end, value, final}. The chart draws the last ten minutes, one
// stacked bar per minute, with SVG (no library).

const MINUTES = 10;
const COLORS = ["#1f6feb", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#0a7c86"];
const SVG = "http://www.w3.org/2000/svg";
const W = 800, H = 200, LEFT = 44, BOTTOM = 20, TOP = 8;

const config = await (await fetch("/config")).json();
const products = await (await fetch("/products")).json();
const color = new Map(products.map((p, i) => [p.sku, COLORS[i % COLORS.length]]));
const box = document.getElementById("sales");
const windows = new Map(); // "sku@start" -> {key, start, end, value, final}
let snapshotted = false;

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// A snapshot comes in chunks ({entries, first, last}): the first one starts afresh.
// A change is {key, value} or {key, deleted: true}.
function snapshot(data) {
  if (data.first) windows.clear();
  for (const e of data.entries) windows.set(e.key, e.value);
  if (data.last) {
    box.dataset.state = "live";
    snapshotted = true;
  }
  draw();
}

function change(data) {
  if (data.deleted) windows.delete(data.key);
  else windows.set(data.key, data.value);
  draw();
}

function draw() {
  const minute = 60_000;
  const starts = [...windows.values()].map((w) => Date.parse(w.start));
  const last = Math.max(Math.floor(Date.now() / minute) * minute, ...starts);
  const first = last - (MINUTES - 1) * minute;
  const bars = new Map(); // start ms -> [{sku, value, final}]
  for (const w of windows.values()) {
    const at = Date.parse(w.start);
    if (at < first) continue;
    if (!bars.has(at)) bars.set(at, []);
    bars.get(at).push({ sku: w.key, value: Number(w.value) || 0, final: w.final });
  }
  const totals = [...bars.values()].map((b) => b.reduce((s, x) => s + x.value, 0));
  const top = Math.max(1, ...totals);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "sales per minute, per product" });
  const plotH = H - BOTTOM - TOP, slot = (W - LEFT) / MINUTES;
  chart.append(svg("text", { x: LEFT - 6, y: TOP + 10, "text-anchor": "end", class: "axis" },
    `${Math.round(top)} €`));
  chart.append(svg("line", { x1: LEFT, y1: H - BOTTOM, x2: W, y2: H - BOTTOM, stroke: "#ccd" }));
  for (let i = 0; i < MINUTES; i++) {
    const at = first + i * minute;
    const x = LEFT + i * slot + slot * 0.15;
    let y = H - BOTTOM;
    for (const bar of (bars.get(at) || []).sort((a, b) => a.sku.localeCompare(b.sku))) {
      const h = (bar.value / top) * plotH;
      y -= h;
      const rect = svg("rect", { x, y, width: slot * 0.7, height: Math.max(h, 0),
        fill: color.get(bar.sku) || "#667", opacity: bar.final ? 1 : 0.75 });
      rect.dataset.sku = bar.sku;
      rect.dataset.start = new Date(at).toISOString();
      rect.dataset.value = String(bar.value);
      rect.append(svg("title", {}, `${bar.sku}: ${bar.value.toFixed(2)} €`));
      chart.append(rect);
    }
    const label = new Date(at).toISOString().slice(11, 16);
    chart.append(svg("text", { x: x + slot * 0.35, y: H - 5, "text-anchor": "middle",
      class: "axis" }, label));
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const p of products) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color.get(p.sku);
    span.append(swatch, p.sku);
    legend.append(span);
  }
  box.replaceChildren(chart, legend);
  box.dataset.windows = String(windows.size);
}

const source = new EventSource(`${config.hub}/v1/views/sales_per_minute/sse`);
source.addEventListener("snapshot", (m) => snapshot(JSON.parse(m.data)));
source.addEventListener("change", (m) => change(JSON.parse(m.data)));
source.onerror = () => { box.dataset.state = "reconnecting"; };
// Back after a drop: resumed from the last id, so live again once the snapshot was had.
source.onopen = () => { if (snapshotted) box.dataset.state = "live"; };
draw();
window.sales = { windows: () => [...windows.values()] };

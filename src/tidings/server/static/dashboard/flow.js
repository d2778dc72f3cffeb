// Flow map: which services emit which event types, and which services (through their
// consumer groups) and webhook endpoints take them, as a chain read left to right;
// drawn from what the hub holds now: each topic's most recent events (at most
// SAMPLE_PER_PARTITION a partition), the groups with their type filters, and the
// webhooks with theirs. Drawn with Cytoscape (vendored: ../vendor), laid out here.

import cytoscape from "../vendor/cytoscape/cytoscape.esm.min.js";
import { enc, get } from "./api.js";
import { errorBox, fill, fmtNumber, h, table } from "./dom.js";

const SAMPLE_PER_PARTITION = 500;

/** Does a type match NATS-style patterns (order.* one token, order.> the rest)? */
export function typeMatches(patterns, type) {
  if (!patterns || patterns.length === 0) return true;
  const t = type.split(".");
  return patterns.some((pattern) => {
    const p = pattern.split(".");
    for (let i = 0; i < p.length; i++) {
      if (p[i] === ">") return t.length > i;
      if (i >= t.length || (p[i] !== "*" && p[i] !== t[i])) return false;
    }
    return p.length === t.length;
  });
}

async function seenTypes(topics) {
  const seen = new Map(); // "topic\0type" -> {topic, type, count, sources: Map}
  const byId = new Map(); // event id -> "topic\0type"
  const effects = []; // [causationid, source]: who published what an event led to
  await Promise.all(topics.map(async (info) => {
    if (info.events === 0) return;
    const from = info.partitions
      .map((p) => `${p.partition}:${Math.max(p.first_offset, p.next_offset - SAMPLE_PER_PARTITION)}`)
      .join(",");
    const limit = Math.min(10000, SAMPLE_PER_PARTITION * info.partitions.length);
    const page = await get(`/v1/topics/${enc(info.name)}/events?from=${enc(from)}&limit=${limit}`);
    for (const r of page.records) {
      const type = r.event.type || "?";
      const key = `${info.name}\u0000${type}`;
      let s = seen.get(key);
      if (!s) seen.set(key, (s = { topic: info.name, type, count: 0, sources: new Map() }));
      s.count++;
      const src = r.event.source || "?";
      s.sources.set(src, (s.sources.get(src) || 0) + 1);
      if (r.event.id) byId.set(r.event.id, key);
      if (r.event.causationid) effects.push([r.event.causationid, src]);
    }
  }));
  // "topic\0type" -> the sources that published events caused by one of that type
  const causes = new Map();
  for (const [cause, src] of effects) {
    const key = byId.get(cause);
    if (!key) continue;
    if (!causes.has(key)) causes.set(key, new Set());
    causes.get(key).add(src);
  }
  return { seen: [...seen.values()], causes };
}

/** The last segment of a source: "/apps/payments" -> "payments". */
function lastSegment(source) {
  const parts = source.split(/[/:]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : source;
}

/**
 * The service (a source) that runs group g, or null. An App names its groups after
 * itself and publishes as /apps/{name} (tidings/app/handlers.py: app_source), so a
 * group whose name is a source's last segment is that source's; failing that, the
 * one source that published what the events g takes led to (their causationid).
 */
export function serviceOf(g, sources, seen, causes) {
  const named = sources.filter((src) => lastSegment(src) === g.name);
  if (named.length === 1) return named[0];
  const led = new Set();
  for (const s of seen) {
    if (s.topic !== g.topic || !typeMatches(g.config && g.config.types, s.type)) continue;
    for (const src of causes.get(`${s.topic}\u0000${s.type}`) || []) led.add(src);
  }
  return led.size === 1 ? [...led][0] : null;
}

// Labels are drawn FONT_PX at zoom 1 and never under MIN_LABEL_PX on screen: the map
// opens at the zoom that fits its width, but never below MIN_ZOOM (then it pans).
const FONT_PX = 13;
const MIN_LABEL_PX = 11.5;
const MIN_ZOOM = MIN_LABEL_PX / FONT_PX;
const MAX_ZOOM_OPEN = 1.25;
const FONT = `${FONT_PX}px system-ui, sans-serif`;
// Boxes are narrow so that a whole chain fits across the page: a line is wrapped
// after a ".", "/", "-" or space to about WRAP_PX, and one word past MAX_LINE_PX is
// cut with an ellipsis (the whole text is in the detail beside the map).
const WRAP_PX = 104;
const MAX_LINE_PX = 150;
const PAD_X = 10;
const LINE_PX = 17;

let measurer = null;
function textWidth(text) {
  measurer ||= document.createElement("canvas").getContext("2d");
  measurer.font = FONT;
  return measurer.measureText(text).width;
}

function cut(word) {
  if (textWidth(word) <= MAX_LINE_PX) return word;
  let lo = 0;
  let hi = word.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (textWidth(word.slice(0, mid) + "…") <= MAX_LINE_PX) lo = mid;
    else hi = mid - 1;
  }
  return word.slice(0, lo) + "…";
}

/** One line as lines of about WRAP_PX, broken after . / - or a space. */
export function wrap(line) {
  const words = line.match(/[^./\- ]*[./\- ]*/g).filter(Boolean).map(cut);
  const out = [];
  let cur = "";
  for (const w of words) {
    if (cur && textWidth((cur + w).trimEnd()) > WRAP_PX) {
      out.push(cur.trimEnd());
      cur = "";
    }
    cur += w;
  }
  if (cur.trim()) out.push(cur.trimEnd());
  return out;
}

function lines(...parts) {
  return parts.filter(Boolean).flatMap(wrap).join("\n");
}

/** The graph as Cytoscape elements, and rows for the table beside it. */
function buildGraph({ seen, causes }, groups, webhooks) {
  const nodes = new Map();
  const edges = new Map();
  const node = (id, kind, label, extra = {}) => {
    if (!nodes.has(id)) nodes.set(id, { data: { id, kind, label, ...extra } });
    return id;
  };
  const edge = (source, target, extra = {}) => {
    const id = `${source}->${target}`;
    if (!edges.has(id)) edges.set(id, { data: { id, source, target, ...extra } });
  };
  const rows = [];
  const isDlq = (topic) => topic.endsWith(".dlq");
  const live = seen.filter((s) => !isDlq(s.topic));
  const sources = [...new Set(live.flatMap((s) => [...s.sources.keys()]))];
  const mine = groups.filter((g) => !g.internal); // the hub's own: webhooks are drawn below
  const runs = new Map(); // source -> its groups
  const owner = new Map(); // group -> its source, or null
  for (const g of mine) {
    const src = serviceOf(g, sources, live, causes);
    owner.set(g, src);
    if (src) runs.set(src, [...(runs.get(src) || []), g]);
  }
  const serviceNode = (src) => {
    const held = runs.get(src) || [];
    const lag = held.reduce((a, g) => a + (g.lag || 0), 0);
    // Its groups are listed when it is clicked; the box stays narrow.
    return node(`source:${src}`, "source", lines(src, lag ? `lag ${fmtNumber(lag)}` : ""), {
      source: src, groups: held.map((g) => ({ topic: g.topic, name: g.name })),
      trouble: held.some((g) => g.dead_lettered > 0) ? "yes" : "no",
    });
  };
  for (const s of live) {
    const typeId = node(`type:${s.topic}:${s.type}`, "type", lines(s.type, `on ${s.topic}`),
      { topic: s.topic, type: s.type });
    for (const src of s.sources.keys()) edge(serviceNode(src), typeId, { kind: "emits" });
    const takers = [];
    for (const g of mine) {
      if (g.topic !== s.topic || !typeMatches(g.config && g.config.types, s.type)) continue;
      const src = owner.get(g);
      const gid = src ? serviceNode(src)
        : node(`group:${g.topic}:${g.name}`, "group", lines(g.name, `group on ${g.topic}`, g.lag ? `lag ${fmtNumber(g.lag)}` : ""),
          { topic: g.topic, group: g.name, trouble: g.dead_lettered > 0 ? "yes" : "no" });
      edge(typeId, gid, { kind: "takes", group: g.name });
      takers.push(src ? `${src} (group ${g.name})` : `group ${g.name}`);
      if (g.dead_lettered > 0) {
        const dlq = (g.config && g.config.dead_letter_topic) || `${g.topic}.dlq`;
        const did = node(`dlq:${dlq}`, "dlq", lines(dlq, "dead letters"), { topic: dlq });
        edge(gid, did, { label: fmtNumber(g.dead_lettered), kind: "dead" });
      }
    }
    for (const w of webhooks || []) {
      if (!w.topics.includes(s.topic) || !typeMatches(w.types, s.type)) continue;
      const wid = node(`webhook:${w.id}`, "webhook", lines(w.description || w.id, `webhook · ${w.state}`),
        { webhook: w.id, name: w.description || w.id, url: w.url, trouble: w.state === "healthy" ? "no" : "yes" });
      edge(typeId, wid, { kind: "takes" });
      takers.push(`webhook ${w.description || w.id} (${w.state})`);
    }
    rows.push({ ...s, takers });
  }
  for (const n of nodes.values()) {
    const ls = n.data.label.split("\n");
    n.data.w = Math.ceil(Math.max(...ls.map(textWidth))) + 2 * PAD_X;
    n.data.h = LINE_PX * ls.length + 12;
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()], rows };
}

/**
 * Left to right as the events flow: each node's column is its longest path from a
 * node nothing leads to (a cycle, like a payment failure sent back to inventory, is
 * cut where a walk from the first columns meets it again); dead letters sit one
 * column past their group. In a column, nodes are ordered by where their
 * predecessors are, so a chain reads as a line.
 */
export function layered(nodes, edges) {
  const ids = nodes.map((n) => n.data.id);
  const out = new Map(ids.map((id) => [id, []]));
  const into = new Map(ids.map((id) => [id, []]));
  const flow = edges.filter((e) => e.data.kind !== "dead");
  for (const e of flow) {
    out.get(e.data.source).push(e.data.target);
    into.get(e.data.target).push(e.data.source);
  }
  // Drop the edges that close a cycle: a depth-first walk from the roots.
  const state = new Map(); // 1 on the stack, 2 done
  const back = new Set();
  const walk = (start) => {
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const next = out.get(top[0])[top[1]++];
      if (next === undefined) {
        state.set(top[0], 2);
        stack.pop();
      } else if (state.get(next) === 1) {
        back.add(`${top[0]}->${next}`);
      } else if (!state.has(next)) {
        state.set(next, 1);
        stack.push([next, 0]);
      }
    }
  };
  const roots = ids.filter((id) => into.get(id).length === 0);
  for (const id of [...roots, ...ids]) if (!state.has(id)) walk(id);
  const dag = flow.filter((e) => !back.has(e.data.id));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const e of dag) indeg.set(e.data.target, indeg.get(e.data.target) + 1);
  const rank = new Map(ids.map((id) => [id, 0]));
  const queue = ids.filter((id) => indeg.get(id) === 0);
  const succ = new Map(ids.map((id) => [id, []]));
  for (const e of dag) succ.get(e.data.source).push(e.data.target);
  while (queue.length) {
    const id = queue.shift();
    for (const t of succ.get(id)) {
      rank.set(t, Math.max(rank.get(t), rank.get(id) + 1));
      indeg.set(t, indeg.get(t) - 1);
      if (indeg.get(t) === 0) queue.push(t);
    }
  }
  for (const e of edges) {
    if (e.data.kind === "dead") rank.set(e.data.target, Math.max(rank.get(e.data.target), rank.get(e.data.source) + 1));
  }
  const columns = [];
  for (const id of ids) (columns[rank.get(id)] ||= []).push(id);
  const order = new Map();
  const place = () => columns.forEach((col) => col && col.forEach((id, i) => order.set(id, i)));
  place();
  for (let sweep = 0; sweep < 4; sweep++) {
    for (const col of columns) {
      if (!col) continue;
      const at = (id) => {
        const before = into.get(id).filter((p) => rank.get(p) < rank.get(id)).map((p) => order.get(p));
        return before.length ? before.reduce((a, b) => a + b, 0) / before.length : order.get(id);
      };
      const keyed = col.map((id) => [at(id), order.get(id), id]);
      keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      col.splice(0, col.length, ...keyed.map((k) => k[2]));
      col.forEach((id, i) => order.set(id, i));
    }
  }
  const size = new Map(nodes.map((n) => [n.data.id, n.data]));
  const positions = {};
  const GAP_X = 30;
  const GAP_Y = 16;
  const heights = columns.map((col) => (col || []).reduce((a, id) => a + size.get(id).h + GAP_Y, -GAP_Y));
  const tallest = Math.max(0, ...heights);
  let x = 0;
  columns.forEach((col, c) => {
    if (!col) return;
    const width = Math.max(...col.map((id) => size.get(id).w));
    let y = (tallest - heights[c]) / 2;
    for (const id of col) {
      const d = size.get(id);
      positions[id] = { x: x + width / 2, y: y + d.h / 2 };
      y += d.h + GAP_Y;
    }
    x += width + GAP_X;
  });
  return { positions, rank };
}

const STYLE = [
  { selector: "node", style: {
    shape: "round-rectangle", label: "data(label)", "text-wrap": "wrap", "text-valign": "center",
    "text-max-width": 10000, "font-size": FONT_PX, "font-family": "system-ui, sans-serif", color: "#111827",
    "background-color": "#f3f4f6", "border-width": 1, "border-color": "#9ca3af",
    width: "data(w)", height: "data(h)",
  } },
  { selector: 'node[kind = "source"]', style: { "background-color": "#dbeafe", "border-color": "#2563eb" } },
  { selector: 'node[kind = "type"]', style: { "background-color": "#fff" } },
  { selector: 'node[kind = "group"]', style: { "background-color": "#dcfce7", "border-color": "#15803d" } },
  { selector: 'node[kind = "webhook"]', style: { "background-color": "#ede9fe", "border-color": "#7c3aed" } },
  { selector: 'node[kind = "dlq"], node[trouble = "yes"]', style: { "background-color": "#fee2e2", "border-color": "#b91c1c" } },
  { selector: "node:selected", style: { "border-width": 3 } },
  { selector: "edge", style: {
    "curve-style": "bezier", "target-arrow-shape": "triangle", width: 1.5,
    "line-color": "#9ca3af", "target-arrow-color": "#9ca3af",
  } },
  { selector: 'edge[kind = "takes"]', style: { "line-color": "#15803d", "target-arrow-color": "#15803d" } },
  { selector: "edge[label]", style: {
    label: "data(label)", "font-size": FONT_PX, "text-background-color": "#fff", "text-background-opacity": 1,
  } },
  { selector: 'edge[kind = "dead"]', style: { "line-color": "#b91c1c", "target-arrow-color": "#b91c1c", "line-style": "dashed" } },
];

export function mount(root, params, { sampler, go }) {
  const graph = h("div", { id: "flow-graph", class: "graph" });
  const info = h("aside", { class: "detail", id: "flow-detail" });
  const list = h("section", { id: "flow-table" });
  const refresh = h("button", { type: "button", id: "flow-refresh" }, "Redraw");
  const wider = h("span", { id: "flow-wider", class: "muted", hidden: true },
    "The map is wider than the page at a readable size: drag it to see the rest.");
  fill(root, h("h1", {}, "Flow map"),
    h("p", { class: "muted" },
      "Left to right as events flow: services → the event types they emit, per topic → the services " +
      "(by their consumer groups) and webhooks that take them, and so on down the chain; " +
      `from each topic's last ${SAMPLE_PER_PARTITION} events a partition. Drag to pan, click a box for more.`),
    h("div", { class: "controls" }, refresh, wider),
    h("div", { class: "panel" }, graph), info, list);
  let cy = null;
  let ready = false;

  function describe(d) {
    const link = (text, view, p) => h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go(view, p); } }, text);
    if (d.kind === "type") return [h("h3", {}, d.type), h("p", {}, `on topic ${d.topic}`), link("follow it live", "tail", { topic: d.topic, types: d.type })];
    if (d.kind === "group") return [h("h3", {}, d.group), h("p", {}, `consumer group on ${d.topic}`), link("open the group", "groups", { topic: d.topic, group: d.group })];
    if (d.kind === "webhook") return [h("h3", {}, d.name), h("p", { class: "mono" }, d.url), link("open the endpoint", "webhooks", { id: d.webhook })];
    if (d.kind === "dlq") return [h("h3", {}, d.topic), link("follow the dead letters", "tail", { topic: d.topic, from: "earliest" })];
    return [h("h3", {}, d.source), h("p", {}, "a service: it published these events",
      d.groups.length ? ", and takes events through its consumer groups:" : "."),
    d.groups.length ? h("ul", {}, d.groups.map((g) => h("li", {}, link(`${g.name} on ${g.topic}`, "groups", { topic: g.topic, group: g.name })))) : null];
  }

  async function draw() {
    ready = false;
    const cur = sampler.last || { topics: (await get("/v1/topics")).topics, groups: [], webhooks: [] };
    let seen;
    try {
      seen = await seenTypes(cur.topics);
    } catch (err) {
      fill(list, errorBox(err));
      return;
    }
    const { nodes, edges, rows } = buildGraph(seen, cur.groups, cur.webhooks);
    const { positions, rank } = layered(nodes, edges);
    for (const n of nodes) n.position = positions[n.data.id];
    // Open at the zoom that fits the map's width, never so small that a label is
    // under MIN_LABEL_PX; the box is as tall as the map at that zoom.
    const PAD = 16;
    const xs = nodes.map((n) => [n.position.x - n.data.w / 2, n.position.x + n.data.w / 2]);
    const ys = nodes.map((n) => [n.position.y - n.data.h / 2, n.position.y + n.data.h / 2]);
    const bw = nodes.length ? Math.max(...xs.map((x) => x[1])) - Math.min(...xs.map((x) => x[0])) : 1;
    const bh = nodes.length ? Math.max(...ys.map((y) => y[1])) - Math.min(...ys.map((y) => y[0])) : 1;
    const zoom = Math.min(MAX_ZOOM_OPEN, Math.max(MIN_ZOOM, (graph.clientWidth - 2 * PAD) / bw));
    graph.style.height = `${Math.round(Math.min(1400, Math.max(240, bh * zoom + 2 * PAD)))}px`;
    if (cy) cy.destroy();
    cy = cytoscape({
      container: graph,
      elements: [...nodes, ...edges],
      style: STYLE,
      layout: { name: "preset" },
      minZoom: MIN_ZOOM,
      maxZoom: 2.5,
      wheelSensitivity: 0.3,
    });
    cy.zoom(zoom);
    const box = cy.elements().boundingBox();
    const fits = box.w * zoom <= graph.clientWidth - 2 * PAD;
    wider.hidden = fits;
    cy.pan({
      x: fits ? (graph.clientWidth - box.w * zoom) / 2 - box.x1 * zoom : PAD - box.x1 * zoom,
      y: PAD - box.y1 * zoom,
    });
    cy.on("tap", "node", (ev) => fill(info, describe(ev.target.data())));
    ready = true;
    window.flow = {
      get ready() { return ready; },
      nodes: () => cy.nodes().map((n) => n.id()),
      edges: () => cy.edges().map((e) => e.id()),
      column: (id) => rank.get(id),
      /** Where each node is drawn, on the page: {id: {x1, x2, y1, y2}}. */
      boxes: () => Object.fromEntries(cy.nodes().map((n) => [n.id(), n.renderedBoundingBox({ includeLabels: false })])),
      /** The labels as drawn: the smallest size on screen, and those not inside their box. */
      measure() {
        const z = cy.zoom();
        const sizes = cy.elements().filter((e) => e.style("label")).map((e) => parseFloat(e.style("font-size")) * z);
        const spill = cy.nodes().filter((n) => {
          const body = n.boundingBox({ includeLabels: false, includeOverlays: false });
          const text = n.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: true, includeOverlays: false });
          return text.x1 < body.x1 - 0.5 || text.x2 > body.x2 + 0.5 || text.y1 < body.y1 - 0.5 || text.y2 > body.y2 + 0.5;
        }).map((n) => n.id());
        return { labels: sizes.length, smallest: sizes.length ? Math.min(...sizes) : 0, zoom: z, spill };
      },
    };
    fill(list, h("h2", {}, "As a table"), rows.length
      ? table(["topic", "type", "events seen", "published by", "taken by"],
        rows.sort((a, b) => a.topic.localeCompare(b.topic) || a.type.localeCompare(b.type)).map((r) =>
          h("tr", { dataset: { topic: r.topic, type: r.type } },
            h("td", {}, r.topic), h("td", {}, r.type), h("td", { class: "num" }, fmtNumber(r.count)),
            h("td", {}, [...r.sources.keys()].join(", ")),
            h("td", {}, r.takers.length ? r.takers.join(", ") : h("span", { class: "warn" }, "nobody"))),
        ), { class: "flow" })
      : h("p", { class: "muted" }, "No events yet."));
  }

  refresh.addEventListener("click", draw);
  let drawn = false;
  const off = sampler.on(() => {
    if (!drawn) {
      drawn = true;
      draw();
    }
  });
  if (sampler.last) {
    drawn = true;
    draw();
  }
  return {
    unmount() {
      off();
      if (cy) cy.destroy();
    },
  };
}

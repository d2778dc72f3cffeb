// Flow map: which sources emit which event types, and which consumer groups and
// webhook endpoints take them, drawn from what the hub holds now: each topic's most
// recent events (at most SAMPLE_PER_PARTITION a partition), the groups with their
// type filters, and the webhooks with theirs. Drawn with Cytoscape (vendored: ../vendor).

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
    }
  }));
  return [...seen.values()];
}

function lines(...parts) {
  return parts.filter(Boolean).join("\n");
}

/** The graph as Cytoscape elements, and rows for the table beside it. */
function buildGraph(seen, groups, webhooks) {
  const nodes = new Map();
  const edges = [];
  const node = (id, kind, label, extra = {}) => {
    if (!nodes.has(id)) nodes.set(id, { data: { id, kind, label, ...extra } });
    return id;
  };
  const rows = [];
  const isDlq = (topic) => topic.endsWith(".dlq");
  for (const s of seen) {
    if (isDlq(s.topic)) continue;
    const typeId = node(`type:${s.topic}:${s.type}`, "type", lines(s.type, `on ${s.topic}`),
      { topic: s.topic, type: s.type });
    for (const [src, n] of s.sources) {
      const srcId = node(`source:${src}`, "source", src);
      edges.push({ data: { id: `${srcId}->${typeId}`, source: srcId, target: typeId, label: fmtNumber(n) } });
    }
    const takers = [];
    for (const g of groups) {
      if (g.topic !== s.topic || g.internal) continue; // the hub's own: webhooks are drawn below
      if (!typeMatches(g.config && g.config.types, s.type)) continue;
      const gid = node(`group:${g.topic}:${g.name}`, "group", lines(g.name, `group on ${g.topic}`, g.lag ? `lag ${fmtNumber(g.lag)}` : ""),
        { topic: g.topic, group: g.name, trouble: g.dead_lettered > 0 ? "yes" : "no" });
      edges.push({ data: { id: `${typeId}->${gid}`, source: typeId, target: gid } });
      takers.push(`group ${g.name}`);
      if (g.dead_lettered > 0) {
        const dlq = (g.config && g.config.dead_letter_topic) || `${g.topic}.dlq`;
        const did = node(`dlq:${dlq}`, "dlq", lines(dlq, "dead letters"), { topic: dlq });
        const eid = `${gid}->${did}`;
        if (!edges.some((e) => e.data.id === eid)) {
          edges.push({ data: { id: eid, source: gid, target: did, label: fmtNumber(g.dead_lettered), kind: "dead" } });
        }
      }
    }
    for (const w of webhooks || []) {
      if (!w.topics.includes(s.topic) || !typeMatches(w.types, s.type)) continue;
      const wid = node(`webhook:${w.id}`, "webhook", lines(w.description || w.id, w.url, w.state),
        { webhook: w.id, trouble: w.state === "healthy" ? "no" : "yes" });
      edges.push({ data: { id: `${typeId}->${wid}`, source: typeId, target: wid } });
      takers.push(`webhook ${w.description || w.id} (${w.state})`);
    }
    rows.push({ ...s, takers });
  }
  return { elements: [...nodes.values(), ...edges], rows };
}

const STYLE = [
  { selector: "node", style: {
    shape: "round-rectangle", label: "data(label)", "text-wrap": "wrap", "text-valign": "center",
    "font-size": 13, "font-family": "system-ui, sans-serif", color: "#111827",
    "background-color": "#f3f4f6", "border-width": 1, "border-color": "#9ca3af",
    width: (n) => Math.max(90, 7.5 * Math.max(...n.data("label").split("\n").map((l) => l.length)) + 16),
    height: (n) => 18 * n.data("label").split("\n").length + 12,
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
  { selector: "edge[label]", style: {
    label: "data(label)", "font-size": 10, "text-background-color": "#fff", "text-background-opacity": 1,
  } },
  { selector: 'edge[kind = "dead"]', style: { "line-color": "#b91c1c", "target-arrow-color": "#b91c1c", "line-style": "dashed" } },
];

export function mount(root, params, { sampler, go }) {
  const graph = h("div", { id: "flow-graph", class: "graph" });
  const info = h("aside", { class: "detail", id: "flow-detail" });
  const list = h("section", { id: "flow-table" });
  const refresh = h("button", { type: "button", id: "flow-refresh" }, "Redraw");
  fill(root, h("h1", {}, "Flow map"),
    h("p", { class: "muted" },
      "Services (sources) → the event types they emit, per topic → the consumer groups and webhooks that take them, ",
      `from each topic's last ${SAMPLE_PER_PARTITION} events a partition. Click a box for more.`),
    h("div", { class: "controls" }, refresh),
    h("div", { class: "panel" }, graph), info, list);
  let cy = null;

  function describe(d) {
    const link = (text, view, p) => h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go(view, p); } }, text);
    if (d.kind === "type") return [h("h3", {}, d.type), h("p", {}, `on topic ${d.topic}`), link("follow it live", "tail", { topic: d.topic, types: d.type })];
    if (d.kind === "group") return [h("h3", {}, d.group), h("p", {}, `consumer group on ${d.topic}`), link("open the group", "groups", { topic: d.topic, group: d.group })];
    if (d.kind === "webhook") return [h("h3", {}, d.label.split("\n")[0]), link("open the endpoint", "webhooks", { id: d.webhook })];
    if (d.kind === "dlq") return [h("h3", {}, d.topic), link("follow the dead letters", "tail", { topic: d.topic, from: "earliest" })];
    return [h("h3", {}, d.label), h("p", {}, "a source: the service that published these events")];
  }

  async function draw() {
    const cur = sampler.last || { topics: (await get("/v1/topics")).topics, groups: [], webhooks: [] };
    let seen;
    try {
      seen = await seenTypes(cur.topics);
    } catch (err) {
      fill(list, errorBox(err));
      return;
    }
    const { elements, rows } = buildGraph(seen, cur.groups, cur.webhooks);
    if (cy) cy.destroy();
    const roots = elements.filter((e) => e.data.kind === "source").map((e) => `#${CSS.escape(e.data.id)}`);
    cy = cytoscape({
      container: graph,
      elements,
      style: STYLE,
      layout: {
        name: "breadthfirst", directed: true, roots: roots.length ? roots.join(",") : undefined,
        spacingFactor: 0.9, padding: 16,
        // Columns left to right: sources, types, consumers, dead letters.
        transform: (n, pos) => ({ x: pos.y * 1.6, y: pos.x * 0.5 }),
      },
      minZoom: 0.3,
      maxZoom: 2.5,
    });
    cy.on("tap", "node", (ev) => fill(info, describe(ev.target.data())));
    window.flow = { nodes: () => cy.nodes().map((n) => n.id()), edges: () => cy.edges().map((e) => e.id()) };
    fill(list, h("h2", {}, "As a table"), rows.length
      ? table(["topic", "type", "events seen", "sources", "taken by"],
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

// Overview: the hub's health, events/s per topic over the last day, and the topics.

import { metric } from "./api.js";
import { TimeChart } from "./chart.js";
import { fill, fmtBytes, fmtNumber, h, table } from "./dom.js";

const MAX_SERIES = 6;

/** Events appended to each topic since the previous sample, per second. */
function topicRates(prev, cur, dt) {
  const rates = {};
  const counter = (s, topic) => metric(s.metrics, "tidings_events_in_total", { topic });
  const before = Object.fromEntries(prev.topics.map((t) => [t.name, t]));
  for (const t of cur.topics) {
    let a = counter(prev, t.name);
    let b = counter(cur, t.name);
    if (a == null || b == null) {
      // No /metrics (a token without admin): what the topic keeps, which retention may cut.
      a = before[t.name] ? before[t.name].events : t.events;
      b = t.events;
    }
    rates[t.name] = Math.max(0, (b - a) / dt);
  }
  return rates;
}

function health(sampler) {
  const n = sampler.samples.length;
  const cur = sampler.samples[n - 1];
  const prev = sampler.samples[n - 2];
  const m = cur.metrics;
  const cards = [];
  const card = (label, value, note = "") =>
    h("div", { class: "card", "data-metric": label }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, value), note ? h("div", { class: "note" }, note) : null);
  const events = cur.topics.reduce((a, t) => a + t.events, 0);
  cards.push(card("topics", fmtNumber(cur.topics.length), `${fmtNumber(events)} events kept`));
  if (prev) {
    const rates = topicRates(prev, cur, (cur.t - prev.t) / 1000);
    const total = Object.values(rates).reduce((a, b) => a + b, 0);
    cards.push(card("events/s", fmtNumber(total), "appended, all topics"));
  }
  if (!m) {
    cards.push(card("health", "–", "/metrics needs an admin token"));
    return cards;
  }
  const fsyncCount = metric(m, "tidings_fsync_seconds_count");
  const fsyncSum = metric(m, "tidings_fsync_seconds_sum");
  let fsync = "–";
  let fsyncNote = `${fmtNumber(fsyncCount)} fsyncs since start`;
  if (prev && prev.metrics) {
    const dc = fsyncCount - metric(prev.metrics, "tidings_fsync_seconds_count");
    const ds = fsyncSum - metric(prev.metrics, "tidings_fsync_seconds_sum");
    if (dc > 0) fsync = `${fmtNumber((ds / dc) * 1000)} ms`;
    else fsync = "idle";
    fsyncNote = `mean of the last ${Math.round((cur.t - prev.t) / 1000)} s; ${fmtNumber(dc)} fsyncs`;
  } else if (fsyncCount > 0) {
    fsync = `${fmtNumber((fsyncSum / fsyncCount) * 1000)} ms`;
    fsyncNote = "mean since start";
  }
  cards.push(card("fsync latency", fsync, fsyncNote));
  const ws = metric(m, "tidings_connections", { channel: "websocket" });
  const sse = metric(m, "tidings_connections", { channel: "sse" });
  cards.push(card("connections", fmtNumber((ws || 0) + (sse || 0)), `${fmtNumber(ws)} WebSocket · ${fmtNumber(sse)} SSE`));
  cards.push(card("memory", fmtBytes(metric(m, "process_resident_memory_bytes")), "resident"));
  if (prev && prev.metrics) {
    const cpu = metric(m, "process_cpu_seconds_total") - metric(prev.metrics, "process_cpu_seconds_total");
    cards.push(card("CPU", `${fmtNumber((cpu / ((cur.t - prev.t) / 1000)) * 100)} %`, "of one core"));
  }
  const start = metric(m, "process_start_time_seconds");
  if (start) {
    const up = Date.now() / 1000 - start;
    const text = up < 3600 ? `${Math.round(up / 60)} min` : `${(up / 3600).toFixed(1)} h`;
    cards.push(card("up", text));
  }
  return cards;
}

export function mount(root, params, { sampler, go }) {
  const cards = h("section", { class: "cards", id: "health" });
  const chart = new TimeChart({ title: "events/s per topic", yLabel: "events/s" });
  const topics = h("section", { id: "topics" });
  fill(root, h("h1", {}, "Overview"), cards, h("section", { class: "panel" }, chart.el), topics);

  function render() {
    const cur = sampler.last;
    if (!cur) return;
    fill(cards, health(sampler));
    // The hub's day of events/s per topic, then the live samples: the busiest topics
    // get a line each; the rest are summed.
    const [xs, columns] = sampler.timeline("events_in", (s) => s.labels.topic, topicRates);
    const totals = {};
    for (const [name, col] of Object.entries(columns)) totals[name] = col.reduce((a, v) => a + (v || 0), 0);
    const top = Object.keys(totals).sort((a, b) => totals[b] - totals[a]).slice(0, MAX_SERIES);
    const series = top.map((name) => ({ label: name, values: columns[name] }));
    if (Object.keys(totals).length > top.length) {
      const rest = Object.keys(totals).filter((name) => !top.includes(name)).map((name) => columns[name]);
      series.push({
        label: "other topics",
        values: xs.map((_, i) => {
          const vs = rest.map((col) => col[i]).filter((v) => v != null);
          return vs.length ? vs.reduce((a, v) => a + v, 0) : null;
        }),
      });
    }
    chart.update(xs, series.length ? series : [{ label: "events/s", values: xs.map(() => 0) }]);

    const [, rates] = sampler.series(topicRates);
    const now = rates[rates.length - 1] || {};
    const groupsBy = {};
    for (const g of cur.groups) (groupsBy[g.topic] ||= []).push(g);
    const rows = cur.topics.map((t) =>
      h("tr", { "data-topic": t.name },
        h("td", {}, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go("tail", { topic: t.name }); } }, t.name)),
        h("td", { class: "num" }, t.partitions.length),
        h("td", { class: "num" }, fmtNumber(t.events)),
        h("td", { class: "num" }, fmtBytes(t.bytes)),
        h("td", { class: "num" }, fmtNumber(now[t.name] ?? null)),
        h("td", {}, (groupsBy[t.name] || []).map((g) =>
          h("a", { class: "chip", href: "#", onclick: (ev) => { ev.preventDefault(); go("groups", { topic: g.topic, group: g.name }); } },
            `${g.name} (lag ${fmtNumber(g.lag)})`))),
        h("td", { class: "small" }, t.partitions.map((p) => `${p.partition}: ${p.first_offset}…${p.next_offset}`).join("  "),
          damageNote(t)),
      ));
    fill(topics, h("h2", {}, "Topics"),
      rows.length
        ? table(["topic", "partitions", "events", "size", "events/s", "groups", "offsets (first…next)"], rows, { class: "topics" })
        : h("p", { class: "muted" }, "No topics yet: publish an event and it shows here."));
  }

  const off = sampler.on(render);
  render();
  return {
    unmount() {
      off();
      chart.destroy();
    },
  };
}

// Offsets lost to damage on disk, per partition (GET /v1/topics/{t} "damage"): a warning.
function damageNote(t) {
  const ranges = t.partitions.flatMap((p) => (p.damage || []).map((d) => ({ p: p.partition, ...d })));
  if (!ranges.length) return null;
  const text = ranges.map((d) => `${d.p}: ${d.from}…${d.to - 1} (${fmtNumber(d.events)} lost, ${d.segment} byte ${d.position}: ${d.why})`);
  return h("div", { class: "warn", "data-damage": t.name, title: "run tidings check DATA_DIR for details" },
    `damaged: ${text.join("; ")}`);
}

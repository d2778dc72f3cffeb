// Trace: every event of one correlationid (an order, say), across topics, as a
// timeline with a column per service (the event's source). The hub keeps no index
// by correlationid: the page reads each topic's most recent events (at most
// SCAN_PER_TOPIC a topic) and keeps those that match.

import { enc, get } from "./api.js";
import { errorBox, fill, fmtNumber, fmtTime, h } from "./dom.js";
import { dataPreview, eventDetail } from "./events.js";

const SCAN_PER_TOPIC = 20_000;
const PAGE = 1000;
const RECENT_PER_PARTITION = 200;

async function scanTopic(info, id) {
  const found = [];
  // From the last SCAN_PER_TOPIC events of each partition, oldest first.
  let from = info.partitions
    .map((p) => `${p.partition}:${Math.max(p.first_offset, p.next_offset - SCAN_PER_TOPIC)}`)
    .join(",");
  const end = Object.fromEntries(info.partitions.map((p) => [p.partition, p.next_offset]));
  for (let read = 0; read < SCAN_PER_TOPIC * info.partitions.length; read += PAGE) {
    const page = await get(`/v1/topics/${enc(info.name)}/events?from=${enc(from)}&limit=${PAGE}`);
    for (const r of page.records) if (r.event && r.event.correlationid === id) found.push(r);
    if (page.records.length === 0) break;
    from = page.next;
    const done = from.split(",").every((kv) => {
      const [p, o] = kv.split(":").map(Number);
      return o >= (end[p] ?? 0);
    });
    if (done) break;
  }
  return found;
}

/** The correlation ids of each topic's most recent events: where a trace could start. */
async function recentCorrelations(topics) {
  const byId = new Map();
  await Promise.all(topics.map(async (info) => {
    if (info.events === 0 || info.name.endsWith(".dlq")) return;
    const from = info.partitions
      .map((p) => `${p.partition}:${Math.max(p.first_offset, p.next_offset - RECENT_PER_PARTITION)}`)
      .join(",");
    const page = await get(`/v1/topics/${enc(info.name)}/events?from=${enc(from)}&limit=${RECENT_PER_PARTITION * info.partitions.length}`);
    for (const r of page.records) {
      const id = r.event.correlationid;
      if (!id) continue;
      let c = byId.get(id);
      if (!c) byId.set(id, (c = { id, events: 0, last: null, trouble: null }));
      c.events++;
      const t = Date.parse(r.event.time) || 0;
      if (!c.last || t >= c.last.t) c.last = { t, type: r.event.type };
      if (isTrouble(r.event) && (!c.trouble || t >= c.trouble.t)) c.trouble = { t, type: r.event.type };
    }
  }));
  return [...byId.values()].sort((a, b) => (!!b.trouble - !!a.trouble) || b.last.t - a.last.t);
}

function isTrouble(ev) {
  return ev.dlqreason != null || /(fail|cancel|reject|declin|error|expired|timeout)/i.test(ev.type || "");
}

export function mount(root, params, { sampler }) {
  const input = h("input", { id: "trace-id", placeholder: "correlationid, e.g. an order id", size: 36, value: params.get("id") || "" });
  const form = h("form", { class: "controls", onsubmit: (ev) => {
    ev.preventDefault();
    run(input.value.trim());
  } }, h("label", {}, "Correlation id ", input), h("button", { type: "submit", id: "trace-find" }, "Trace"));
  const out = h("section", { id: "trace-result" });
  const detail = h("aside", { class: "detail", id: "trace-detail" });
  fill(root, h("h1", {}, "Trace"),
    h("p", { class: "muted" }, "Every event that carries one correlationid, in time order, a column per service (its source)."),
    form, h("div", { class: "split" }, out, detail));
  let runs = 0;

  async function topics() {
    if (sampler.last) return sampler.last.topics;
    return (await get("/v1/topics")).topics;
  }

  async function run(id) {
    if (!id) return;
    const mine = ++runs;
    if (location.hash !== `#/trace?id=${encodeURIComponent(id)}`) {
      history.replaceState(null, "", `#/trace?id=${encodeURIComponent(id)}`);
    }
    fill(out, h("p", { class: "muted" }, `Looking for ${id}…`));
    fill(detail);
    let records;
    try {
      const all = await Promise.all((await topics()).map((t) => scanTopic(t, id)));
      records = all.flat();
    } catch (err) {
      if (mine === runs) fill(out, errorBox(err));
      return;
    }
    if (mine !== runs) return;
    if (records.length === 0) {
      fill(out, h("p", { class: "muted", id: "trace-empty" }, `No event has correlationid ${id}.`));
      return;
    }
    const when = (r) => Date.parse(r.event.time) || 0;
    records.sort((a, b) => when(a) - when(b) || a.topic.localeCompare(b.topic) || a.offset - b.offset);
    const services = [...new Set(records.map((r) => r.event.source || "?"))];
    const t0 = when(records[0]);
    const byId = Object.fromEntries(records.map((r) => [r.event.id, r]));
    const rows = records.map((r) => {
      const ev = r.event;
      const cause = ev.causationid && byId[ev.causationid];
      const cell = h("div", { class: `trace-event${isTrouble(ev) ? " trouble" : ""}` },
        h("div", { class: "type" }, ev.type),
        ev.dlqreason != null ? h("div", { class: "reason" }, `dead-lettered by ${ev.dlqgroup}: ${ev.dlqreason}`) : null,
        ev.data && typeof ev.data.reason === "string" ? h("div", { class: "reason" }, ev.data.reason) : null,
        h("div", { class: "small mono" }, dataPreview(ev, 80)),
        cause ? h("div", { class: "small muted" }, `caused by ${cause.event.type}`) : null);
      const row = h("tr", { class: "trace-row", dataset: { type: ev.type || "" }, onclick: () => {
        for (const x of out.querySelectorAll("tr.selected")) x.classList.remove("selected");
        row.classList.add("selected");
        fill(detail, eventDetail(r));
      } },
      h("td", { class: "num nowrap" }, `+${fmtNumber(when(r) - t0)} ms`),
      h("td", { class: "nowrap small" }, fmtTime(ev.time)),
      h("td", { class: "mono small nowrap" }, `${r.topic} ${r.partition}:${r.offset}`),
      services.map((s) => h("td", { class: "lane" }, (ev.source || "?") === s ? cell : null)));
      return row;
    });
    const last = records[records.length - 1].event;
    fill(out,
      h("p", { id: "trace-summary" },
        `${records.length} events over ${fmtNumber(when(records[records.length - 1]) - t0)} ms across ${services.length} service(s); the last is `,
        h("strong", {}, last.type), "."),
      h("table", { class: "trace" },
        h("thead", {}, h("tr", {}, h("th", {}, "after"), h("th", {}, "time"), h("th", {}, "position"), services.map((s) => h("th", {}, s)))),
        h("tbody", {}, rows)));
  }

  async function suggest() {
    try {
      const recent = (await recentCorrelations(await topics())).slice(0, 30);
      if (input.value || recent.length === 0) return;
      fill(out, h("h2", {}, "Recent correlation ids"),
        h("p", { class: "muted" }, "From each topic's latest events; those with a failure or cancellation first. Click one to trace it."),
        h("table", { class: "recent" },
          h("thead", {}, h("tr", {}, ["correlationid", "events seen", "latest", "trouble"].map((x) => h("th", {}, x)))),
          h("tbody", {}, recent.map((c) => h("tr", { class: "recent-row", dataset: { id: c.id } },
            h("td", {}, h("a", { href: `#/trace?id=${encodeURIComponent(c.id)}` }, c.id)),
            h("td", { class: "num" }, fmtNumber(c.events)),
            h("td", {}, `${c.last.type} · ${fmtTime(c.last.t)}`),
            h("td", { class: "reason" }, c.trouble ? c.trouble.type : ""))))));
    } catch (err) {
      if (!input.value) fill(out, errorBox(err));
    }
  }

  if (input.value) run(input.value);
  else suggest();
  return {
    update(p) {
      const id = p.get("id") || "";
      if (id && id !== input.value) {
        input.value = id;
        run(id);
      }
    },
  };
}

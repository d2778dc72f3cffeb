// Trace: every event that carries one correlationid (an order, say), across topics,
// as a timeline with a column per service (the event's source). The events come
// from the hub's event index (GET /v1/events?correlationid=, page after page), so an
// order's whole story shows however many events came after it. A search may also
// name an event id (GET /v1/events/{id}): the trace of its correlationid opens with
// that event selected.

import { ApiError, enc, get } from "./api.js";
import { errorBox, fill, fmtNumber, fmtTime, h } from "./dom.js";
import { dataPreview, eventDetail } from "./events.js";

const PAGE = 1000;
const MAX_PAGES = 100; // at most 100,000 events of one correlationid are drawn
const RECENT_PER_PARTITION = 200;

/** Every record of correlationid `id`, in publish order, following each page's next. */
async function traceRecords(id) {
  const records = [];
  let after = null;
  for (let i = 0; i < MAX_PAGES; i++) {
    const page = await get(`/v1/events?correlationid=${enc(id)}&limit=${PAGE}` +
      (after ? `&after=${enc(after)}` : ""));
    records.push(...page.records);
    if (page.next == null) return { records, more: false };
    after = page.next;
  }
  return { records, more: true };
}

/** What a search names: a correlationid, else an event id (then its correlationid's trace). */
export async function findTrace(q) {
  const byCorrelation = await traceRecords(q);
  if (byCorrelation.records.length) return { id: q, selected: null, ...byCorrelation };
  let record;
  try {
    record = await get(`/v1/events/${enc(q)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return { id: q, selected: null, records: [], more: false };
    throw err;
  }
  const corr = record.event.correlationid;
  if (typeof corr !== "string" || !corr) {
    return { id: null, selected: record.event.id, records: [record], more: false };
  }
  return { id: corr, selected: record.event.id, ...(await traceRecords(corr)) };
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
  const input = h("input", { id: "trace-id", type: "search", placeholder: "correlationid or event id", size: 36, value: params.get("id") || params.get("q") || "" });
  const form = h("form", { class: "controls", onsubmit: (ev) => {
    ev.preventDefault();
    run(input.value.trim());
  } }, h("label", {}, "Correlation id or event id ", input), h("button", { type: "submit", id: "trace-find" }, "Trace"));
  const out = h("section", { id: "trace-result" });
  const detail = h("aside", { class: "detail", id: "trace-detail" });
  fill(root, h("h1", {}, "Trace"),
    h("p", { class: "muted" }, "Every event that carries one correlationid, however old, in time order, a column per service (its source). An event id opens the trace of its correlationid."),
    form, h("div", { class: "split" }, out, detail));
  let runs = 0;

  async function topics() {
    if (sampler.last) return sampler.last.topics;
    return (await get("/v1/topics")).topics;
  }

  async function run(q, want = null) {
    if (!q) return;
    const mine = ++runs;
    fill(out, h("p", { class: "muted" }, `Looking for ${q}…`));
    fill(detail);
    let found;
    try {
      found = await findTrace(q);
    } catch (err) {
      if (mine === runs) fill(out, errorBox(err));
      return;
    }
    if (mine !== runs) return;
    const { records, more } = found;
    const selected = found.selected ?? want;
    const id = found.id ?? q;
    const hash = `#/trace?id=${encodeURIComponent(id)}` + (selected ? `&event=${encodeURIComponent(selected)}` : "");
    if (location.hash !== hash) history.replaceState(null, "", hash);
    if (input.value !== id) input.value = id;
    if (records.length === 0) {
      fill(out, h("p", { class: "muted", id: "trace-empty" }, `No event has correlationid or id ${q}.`));
      return;
    }
    const when = (r) => Date.parse(r.event.time) || 0;
    records.sort((a, b) => when(a) - when(b)); // stable: the hub's publish order breaks ties
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
      const choose = () => {
        for (const x of out.querySelectorAll("tr.selected")) x.classList.remove("selected");
        row.classList.add("selected");
        fill(detail, eventDetail(r));
      };
      const row = h("tr", { class: "trace-row", dataset: { type: ev.type || "", id: ev.id || "" }, onclick: choose },
      h("td", { class: "num nowrap" }, `+${fmtNumber(when(r) - t0)} ms`),
      h("td", { class: "nowrap small" }, fmtTime(ev.time)),
      h("td", { class: "mono small nowrap" }, `${r.topic} ${r.partition}:${r.offset}`),
      services.map((s) => h("td", { class: "lane" }, (ev.source || "?") === s ? cell : null)));
      if (selected && ev.id === selected) queueMicrotask(choose);
      return row;
    });
    const last = records[records.length - 1].event;
    fill(out,
      h("p", { id: "trace-summary" },
        `${records.length} events over ${fmtNumber(when(records[records.length - 1]) - t0)} ms across ${services.length} service(s); the last is `,
        h("strong", {}, last.type), ".",
        more ? ` Only the first ${fmtNumber(records.length)} are drawn.` : ""),
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

  if (input.value) run(input.value, params.get("event"));
  else suggest();
  return {
    update(p) {
      const id = p.get("q") || p.get("id") || "";
      if (id && (id !== input.value || p.get("q"))) {
        input.value = id;
        run(id);
      }
    },
  };
}

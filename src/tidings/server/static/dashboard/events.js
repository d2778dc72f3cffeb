// One event, whole: its position, its CloudEvents attributes and its data.

import { fmtJson, fmtTime, h, table } from "./dom.js";

const FIRST = ["id", "type", "source", "subject", "time", "specversion", "datacontenttype",
  "partitionkey", "correlationid", "causationid", "traceparent"];

/** record: {topic, partition, offset, event, resume?}; traceHref(id) links a correlationid. */
export function eventDetail(record, { traceHref = null } = {}) {
  const ev = record.event || {};
  const names = Object.keys(ev).filter((k) => k !== "data" && k !== "data_base64");
  names.sort((a, b) => {
    const ia = FIRST.indexOf(a);
    const ib = FIRST.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const attrs = names.map((k) => {
    let value = typeof ev[k] === "string" ? ev[k] : JSON.stringify(ev[k]);
    if (k === "time") value = `${ev[k]} (${fmtTime(ev[k])} local)`;
    const cell = k === "correlationid" && traceHref
      ? h("a", { href: traceHref(ev[k]) }, value)
      : value;
    return h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, cell));
  });
  const position = [
    ["topic", record.topic], ["partition", record.partition], ["offset", record.offset],
  ];
  if (record.resume) position.push(["resume token", record.resume]);
  let data = null;
  if ("data" in ev) data = typeof ev.data === "string" ? ev.data : fmtJson(ev.data);
  else if ("data_base64" in ev) data = `(base64) ${ev.data_base64}`;
  return h("div", { class: "event-detail" },
    h("h3", {}, ev.type || "(no type)"),
    h("h4", {}, "Position"),
    table(["", ""], position.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, String(v)))), { class: "kv" }),
    h("h4", {}, "Attributes"),
    table(["attribute", "value"], attrs, { class: "kv" }),
    h("h4", {}, "Data"),
    data == null ? h("p", { class: "muted" }, "no data") : h("pre", { class: "data" }, data),
  );
}

/** The short form of an event: type, subject, key, correlation, the first bytes of data. */
export function dataPreview(ev, max = 120) {
  if (!("data" in ev)) return "";
  const text = typeof ev.data === "string" ? ev.data : JSON.stringify(ev.data);
  return text.length > max ? text.slice(0, max) + "…" : text;
}

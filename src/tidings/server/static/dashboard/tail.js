// Live tail: one topic over the WebSocket (/static/tidings.js), filtered by type
// pattern. Pausing closes the subscription and keeps its resume token; resuming
// subscribes again from that token, so nothing published meanwhile is missed or
// shown twice. Click an event to see it whole.

import { liveClient } from "./api.js";
import { dataPreview, eventDetail } from "./events.js";
import { errorBox, fill, fmtTime, h } from "./dom.js";

const MAX_ROWS = 500;

export function mount(root, params, { sampler }) {
  const topicInput = h("input", { id: "tail-topic", list: "tail-topics", placeholder: "topic", value: params.get("topic") || "", required: true });
  const topicList = h("datalist", { id: "tail-topics" });
  const typesInput = h("input", { id: "tail-types", placeholder: "types: order.* or order.> (empty: all)", value: params.get("types") || "", size: 30 });
  const fromSelect = h("select", { id: "tail-from" },
    h("option", { value: "latest" }, "from now on"),
    h("option", { value: "earliest" }, "from the start"));
  if (params.get("from") === "earliest") fromSelect.value = "earliest";
  const startBtn = h("button", { type: "submit", id: "tail-start" }, "Follow");
  const pauseBtn = h("button", { type: "button", id: "tail-pause", disabled: true }, "Pause");
  const clearBtn = h("button", { type: "button", id: "tail-clear" }, "Clear");
  const state = h("span", { id: "tail-state", class: "muted" }, "not following");
  const message = h("div");
  const body = h("tbody", { id: "tail-rows" });
  const detail = h("aside", { id: "tail-detail", class: "detail" }, h("p", { class: "muted" }, "Click an event to see it whole."));
  const form = h("form", { class: "controls", onsubmit: (ev) => { ev.preventDefault(); start(); } },
    topicInput, topicList, typesInput, fromSelect, startBtn, pauseBtn, clearBtn, state);
  fill(root, h("h1", {}, "Live tail"), form, message,
    h("div", { class: "split" },
      h("div", { class: "list" },
        h("table", { class: "events" },
          h("thead", {}, h("tr", {}, ["time", "type", "subject / key", "correlation", "position", "data"].map((x) => h("th", {}, x)))),
          body)),
      detail));

  let sub = null;
  let paused = null; // the resume token where a pause stopped
  let spec = null; // {topic, types} being followed
  let count = 0;
  const records = []; // newest last, for window.tail

  function showState() {
    if (!spec) state.textContent = "not following";
    else if (paused !== null) state.textContent = `paused at ${paused || "the start"} · ${count} shown`;
    else state.textContent = `following ${spec.topic}${spec.types.length ? " " + spec.types.join(",") : ""} · ${count} shown`;
    state.dataset.state = !spec ? "idle" : paused !== null ? "paused" : "live";
    pauseBtn.disabled = !spec;
    pauseBtn.textContent = paused !== null ? "Resume" : "Pause";
  }

  function onEvent(record) {
    count++;
    records.push(record);
    if (records.length > MAX_ROWS) records.shift();
    const ev = record.event || {};
    const row = h("tr", { class: "event-row", dataset: { id: ev.id || "", offset: String(record.offset) }, onclick: () => select(row, record) },
      h("td", { class: "nowrap" }, fmtTime(ev.time)),
      h("td", {}, ev.type || ""),
      h("td", {}, ev.subject || ev.partitionkey || ""),
      h("td", {}, ev.correlationid || ""),
      h("td", { class: "mono nowrap" }, `${record.partition}:${record.offset}`),
      h("td", { class: "mono small" }, dataPreview(ev)));
    body.prepend(row);
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
    showState();
  }

  function select(row, record) {
    for (const r of body.querySelectorAll("tr.selected")) r.classList.remove("selected");
    row.classList.add("selected");
    fill(detail, eventDetail(record, { traceHref: (id) => `#/trace?id=${encodeURIComponent(id)}` }));
  }

  function subscribe(from) {
    fill(message);
    sub = liveClient().subscribe(spec.topic, {
      types: spec.types,
      from,
      onEvent,
      onError(err) {
        sub = null;
        fill(message, errorBox(err));
        spec = null;
        paused = null;
        showState();
      },
    });
  }

  function start() {
    stop();
    const topic = topicInput.value.trim();
    if (!topic) return;
    const types = typesInput.value.split(",").map((t) => t.trim()).filter(Boolean);
    spec = { topic, types };
    count = 0;
    records.length = 0;
    body.replaceChildren();
    subscribe(fromSelect.value);
    showState();
  }

  function stop() {
    if (sub) sub.close();
    sub = null;
    spec = null;
    paused = null;
  }

  pauseBtn.addEventListener("click", () => {
    if (!spec) return;
    if (paused === null) {
      // The subscription's resume token: after the last event shown, or where it began.
      paused = sub ? sub.position ?? fromSelect.value : "latest";
      if (sub) sub.close();
      sub = null;
    } else {
      const from = paused;
      paused = null;
      subscribe(from);
    }
    showState();
  });
  clearBtn.addEventListener("click", () => {
    body.replaceChildren();
    count = 0;
    showState();
  });

  const offTopics = sampler.on(() => {
    const cur = sampler.last;
    if (!cur) return;
    fill(topicList, cur.topics.map((t) => h("option", { value: t.name })));
  });
  if (sampler.last) fill(topicList, sampler.last.topics.map((t) => h("option", { value: t.name })));
  if (topicInput.value) start();
  showState();
  window.tail = { records, get position() { return paused ?? (sub && sub.position); } };

  return {
    unmount() {
      offTopics();
      stop();
    },
  };
}

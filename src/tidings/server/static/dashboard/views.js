// Views: what stream processors compute and the hub keeps (GET /v1/views). The list
// shows each view's kind, app, inputs, keys and lag (events of its inputs it does not
// reflect yet); a view's page charts its lag per input while it is open and lists its
// keys in order, a page at a time, filtered by a prefix. A window view's page also
// charts its windows: each key's value by window start (sales per product per minute,
// say), from its first WINDOW_KEYS keys. Read-only: a rebuild is a command
// (tidings views rebuild NAME).

import { enc, get } from "./api.js";
import { TimeChart } from "./chart.js";
import { badge, errorBox, fill, fmtNumber, fmtTime, h, table } from "./dom.js";

const KEYS_SHOWN = 100;
const POINTS = 300; // lag samples kept for a view's chart
const WINDOW_KEYS = 1000; // a window view's keys charted (one page of the keys route)

const totalLag = (v) => Object.values(v.lag).reduce((a, n) => a + (n || 0), 0);

export function mount(root, params, { sampler, go }) {
  const list = h("section", { id: "view-list" });
  const detail = h("section", { id: "view-detail" });
  fill(root, h("h1", {}, "Views"), list, detail);
  let views = [];
  let selected = null; // {name, page}
  let listError = null;

  function renderList() {
    if (listError) {
      fill(list, errorBox(listError));
      return;
    }
    const rows = views.map((v) => {
      const lag = totalLag(v);
      const pick = (ev) => {
        ev.preventDefault();
        go("views", { view: v.name });
      };
      return h("tr", { class: selected && selected.name === v.name ? "selected" : "", dataset: { view: v.name } },
        h("td", {}, h("a", { href: "#", onclick: pick }, v.name)),
        h("td", {}, badge(v.kind, "info")),
        h("td", {}, v.app || "–"),
        h("td", {}, v.inputs.join(", ")),
        h("td", { class: "num" }, fmtNumber(v.keys)),
        h("td", { class: lag ? "num warn" : "num" }, fmtNumber(lag)),
        h("td", { class: "num" }, fmtNumber(v.generation)),
        h("td", {}, v.last_commit == null ? "never" : fmtTime(v.last_commit)));
    });
    fill(list, rows.length
      ? table(["view", "kind", "app", "inputs", "keys", "lag", "generation", "last commit"], rows, { class: "views" })
      : h("p", { class: "muted" }, "No views yet: an App's @app.view or @app.window declares one."));
  }

  async function refresh() {
    try {
      views = (await get("/v1/views")).views;
      listError = null;
    } catch (err) {
      listError = err;
    }
    renderList();
    if (selected) selected.page.render(views.find((v) => v.name === selected.name));
  }

  function select(name) {
    if (selected && selected.name === name) return;
    if (selected) selected.page.destroy();
    selected = null;
    fill(detail);
    if (name) selected = { name, page: viewPage(detail, name, go) };
    refresh();
  }

  const off = sampler.on(refresh);
  select(params.get("view"));
  return {
    update(p) {
      select(p.get("view"));
    },
    unmount() {
      off();
      if (selected) selected.page.destroy();
    },
  };
}

function viewPage(root, name, go) {
  const chart = new TimeChart({ title: "lag per input", yLabel: "events" });
  const windows = h("section", { class: "panel", id: "view-windows", hidden: true });
  let values = null; // the window chart, made when the view turns out to be a window
  let gone = false; // destroyed: a key page that comes back late draws nothing
  const cards = h("div", { class: "cards", id: "view-cards" });
  const keys = h("div", { id: "view-keys" });
  const more = h("div", { class: "controls" });
  const prefix = h("input", { id: "view-prefix", placeholder: "key prefix", size: 24 });
  const xs = [];
  const lags = {}; // input -> values
  let after = null; // the next page's after, or null
  let shown = [];

  async function loadKeys(reset) {
    if (reset) {
      after = null;
      shown = [];
    }
    const q = new URLSearchParams({ limit: String(KEYS_SHOWN) });
    if (prefix.value) q.set("prefix", prefix.value);
    if (after) q.set("after", after);
    try {
      const page = await get(`/v1/views/${enc(name)}/keys?${q}`);
      shown = shown.concat(page.keys);
      after = page.next;
    } catch (err) {
      fill(keys, errorBox(err));
      return;
    }
    const rows = shown.map((e) => h("tr", { class: "view-key", dataset: { key: e.key } },
      h("td", {}, h("code", {}, e.key)),
      h("td", {}, h("code", { class: "value" }, JSON.stringify(e.value))),
      h("td", { class: "num" }, e.position)));
    fill(keys, rows.length
      ? table(["key", "value", "position"], rows, { class: "view-keys" })
      : h("p", { class: "muted" }, prefix.value ? `No key starts with "${prefix.value}".` : "No keys yet."));
    fill(more, after ? h("button", { type: "button", id: "view-more", onclick: () => loadKeys(false) }, "More keys") : null);
  }

  const back = h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go("views"); } }, "all views");
  const filter = h("form", { class: "controls", onsubmit: (ev) => { ev.preventDefault(); loadKeys(true); } },
    h("label", {}, "Keys starting with ", prefix), h("button", { type: "submit" }, "Show"));
  fill(root,
    h("h2", {}, `${name} `, h("small", {}, "(", back, ")")),
    cards,
    h("section", { class: "panel" }, chart.el),
    windows,
    h("h3", {}, "Keys"),
    filter, keys, more);
  loadKeys(true);

  function render(v) {
    if (!v) {
      fill(cards, h("p", { class: "muted" }, `No view ${name} (or this token may not read it).`));
      return;
    }
    const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
    fill(cards,
      card("keys", fmtNumber(v.keys)),
      card("lag", fmtNumber(totalLag(v))),
      card("generation", fmtNumber(v.generation)),
      card("last commit", v.last_commit == null ? "never" : fmtTime(v.last_commit)),
      card("app", v.app || "–"),
      // A partitioned view's tasks and the processes that share them now.
      card("tasks", v.tasks > 1 ? `${fmtNumber(v.tasks)} over ${fmtNumber(Object.keys(v.members || {}).length)} processes` : "1"));
    xs.push(Date.now() / 1000);
    for (const input of v.inputs) (lags[input] ||= new Array(xs.length - 1).fill(null)).push(v.lag[input]);
    if (xs.length > POINTS) {
      xs.shift();
      for (const values of Object.values(lags)) values.shift();
    }
    chart.update(xs.slice(), Object.keys(lags).sort().map((label) => ({ label, values: lags[label].slice() })));
    if (v.kind === "window") chartWindows((v.window && v.window.size) || 60_000);
  }

  // Window keys are "{key}@{start}", values {key, start, end, value, final}: one series
  // per key, one point per window start (a gap where a key had no window), and a window
  // of room on either side, so no point sits on the edge.
  async function chartWindows(sizeMs) {
    let page;
    try {
      page = await get(`/v1/views/${enc(name)}/keys?limit=${WINDOW_KEYS}`);
    } catch {
      return; // the lag chart's refresh shows the view's trouble
    }
    if (gone) return;
    if (!values) {
      values = new TimeChart({ title: "window values", yLabel: "value", points: true, tickSpace: 90 });
      fill(windows, values.el);
      windows.hidden = false;
    }
    const byKey = new Map();
    const starts = new Set();
    for (const { value: w } of page.keys) {
      if (!w || typeof w.start !== "string" || typeof w.value !== "number") continue;
      const at = Date.parse(w.start) / 1000;
      starts.add(at);
      if (!byKey.has(w.key)) byKey.set(w.key, new Map());
      byKey.get(w.key).set(at, w.value);
    }
    const ts = [...starts].sort((a, b) => a - b);
    if (ts.length) ts.unshift(ts[0] - sizeMs / 1000), ts.push(ts[ts.length - 1] + sizeMs / 1000);
    const series = [...byKey.keys()].sort().map((label) => ({
      label, values: ts.map((t) => (byKey.get(label).has(t) ? byKey.get(label).get(t) : null)),
    }));
    values.update(ts, series);
  }

  function destroy() {
    gone = true;
    chart.destroy();
    if (values) values.destroy();
  }

  return { render, destroy };
}

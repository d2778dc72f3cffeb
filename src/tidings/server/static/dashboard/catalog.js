// Catalog: the event types the hub knows, from its schema registry (/v1/schemas):
// each type's versions (with a diff between two), compatibility mode, producers and
// consumers (registered apps, sources and groups seen in traffic), and the events
// refused at publish. Types seen in traffic with no schema link to the schema the
// hub infers from them.
//
//   #/catalog?type=order.placed&a=1&b=2

import { enc, get } from "./api.js";
import { errorBox, fill, h, table } from "./dom.js";

/** The JSON text of a value with sorted keys, one line a member: what a diff compares. */
function lines(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === "object") {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value), null, 2).split("\n");
}

/** A line diff (longest common subsequence): [[" " | "-" | "+", line], ...]. */
export function diff(a, b) {
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < n) out.push(["-", a[i++]]);
  while (j < m) out.push(["+", b[j++]]);
  return out;
}

// Styled here, not in dashboard.css: the page's CSP allows inline style attributes.
const DIFF = {
  "+": ["diff-add", "background:#dcfce7"],
  "-": ["diff-del", "background:#fee2e2"],
  " ": ["diff-same", null],
};
const ROW = "cursor:pointer";

function people(list) {
  if (!list.length) return h("span", { class: "muted" }, "none seen");
  return list.map((p, k) => [k ? ", " : "", h("span", { title: p.via }, p.name), h("span", { class: "muted" }, ` (${p.via})`)]);
}

export function mount(root, params, { go }) {
  const list = h("section", { id: "catalog-types" });
  const detail = h("section", { id: "catalog-detail" });
  fill(root, h("h1", {}, "Catalog"),
    h("p", { class: "muted" }, "Event types, their schemas and versions, who produces and consumes them, and what was refused at publish."),
    h("div", { class: "split" }, list, detail));
  let shown = "";

  async function showList() {
    try {
      const got = await get("/v1/schemas");
      const rows = got.schemas.map((s) => h("tr", { class: "clickable", style: ROW, dataset: { type: s.type }, onclick: () => go("catalog", { type: s.type }) },
        h("td", {}, s.type), h("td", { class: "num" }, s.latest ?? "–"), h("td", {}, s.compatibility),
        h("td", {}, s.producers.join(", ")), h("td", {}, s.consumers.join(", ")),
        h("td", { class: "num" }, String(s.failures))));
      for (const t of got.unregistered) {
        rows.push(h("tr", { class: "clickable unregistered", style: ROW, dataset: { type: t }, onclick: () => go("catalog", { type: t, inferred: 1 }) },
          h("td", {}, t), h("td", { class: "muted", colspan: 5 }, "no schema: see what the hub infers")));
      }
      fill(list, rows.length
        ? table(["type", "latest", "compatibility", "producers", "consumers", "refused"], rows, { id: "catalog-table" })
        : h("p", { class: "muted" }, "No event type yet."));
    } catch (err) {
      fill(list, errorBox(err));
    }
  }

  async function showInferred(etype) {
    try {
      const got = await get(`/v1/schemas/${enc(etype)}/inferred`);
      fill(detail, h("h2", {}, etype),
        h("p", {}, `No schema is registered. Inferred from ${got.events} recent events on ${got.topics.join(", ")}; `,
          "adopt it with ", h("code", {}, `tidings schemas adopt ${etype}`), "."),
        h("pre", { id: "catalog-inferred" }, JSON.stringify(got.schema, null, 2)));
    } catch (err) {
      fill(detail, h("h2", {}, etype), errorBox(err));
    }
  }

  async function showType(p) {
    const etype = p.get("type");
    if (!etype) {
      fill(detail, h("p", { class: "muted" }, "Choose a type."));
      return;
    }
    if (p.get("inferred")) return showInferred(etype);
    try {
      const info = await get(`/v1/schemas/${enc(etype)}`);
      const numbers = info.versions.map((v) => v.version);
      const b = Number(p.get("b")) || info.latest;
      const a = Number(p.get("a")) || Math.max(1, b - 1);
      const pick = (name, value) => h("select", { id: `catalog-${name}`, onchange: (ev) => go("catalog", { type: etype, a, b, [name]: ev.target.value }) },
        numbers.map((n) => h("option", { value: n, selected: n === value }, `v${n}`)));
      const [va, vb] = await Promise.all([a, b].map((n) => get(`/v1/schemas/${enc(etype)}/versions/${n}`)));
      const rows = diff(lines(va.schema), lines(vb.schema)).map(([mark, text]) =>
        h("div", { class: DIFF[mark][0], style: DIFF[mark][1] }, `${mark} ${text}`));
      const failures = info.failures;
      fill(detail,
        h("h2", {}, etype),
        h("p", {}, `compatibility ${info.compatibility} · latest v${info.latest ?? "–"} · topics: ${info.topics.join(", ") || "none seen"}`),
        h("p", { id: "catalog-producers" }, "Producers: ", people(info.producers)),
        h("p", { id: "catalog-consumers" }, "Consumers: ", people(info.consumers)),
        h("p", { id: "catalog-failures" }, `Refused at publish since the hub started: ${failures.count}`,
          failures.last ? h("span", { class: "muted" }, ` · last: ${failures.last}`) : null),
        numbers.length
          ? [h("div", { class: "controls" }, "Diff ", pick("a", a), " → ", pick("b", b)),
            h("pre", { id: "catalog-diff", class: "diff" }, rows)]
          : h("p", { class: "muted" }, "No version yet: only consumers have said what they read."));
    } catch (err) {
      fill(detail, h("h2", {}, etype), errorBox(err));
    }
  }

  showList();
  showType(params);
  shown = params.toString();
  return {
    update(p) {
      if (p.toString() === shown) return;
      shown = p.toString();
      showList();
      showType(p);
    },
  };
}

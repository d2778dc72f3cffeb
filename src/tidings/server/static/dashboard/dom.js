// Building the page: elements from data, never HTML from strings. Event contents are
// user input, so every text goes in through textContent (a text node), not innerHTML.

/** h("td", {class: "num", onclick: fn}, "text", child, ...): one element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "value" || name === "checked" || name === "disabled") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything in el with children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table; a header is aligned as its column's cells are (numbers to the right). */
export function table(headers, rows, attrs = {}) {
  const first = rows && rows.length ? rows[0] : null;
  const numeric = (i) => Boolean(first && first.cells && first.cells[i] && first.cells[i].classList.contains("num"));
  return h(
    "table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x, i) => h("th", { class: numeric(i) ? "num" : null }, x)))),
    h("tbody", {}, rows),
  );
}

export function fmtNumber(n) {
  if (n == null || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 100 || Number.isInteger(n)) return Math.round(n).toLocaleString("en");
  return n.toFixed(Math.abs(n) >= 10 ? 1 : 2);
}

export function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** ms since the epoch, or an RFC 3339 string, as local date and time to the ms. */
export function fmtTime(t) {
  if (t == null) return "–";
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A time of day, 24 h, local: 14:03:07. */
export function fmtClock(t) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A Date as the text a time field takes: local, 24 h, to the second. */
export function fmtInputTime(d) {
  return fmtTime(d).slice(0, 19);
}

/**
 * A time typed as local "YYYY-MM-DD HH:MM[:SS]" (24 h; a T for the space will do), or
 * an RFC 3339 time with its offset: a Date, or null when it is neither.
 */
export function parseInputTime(text) {
  const t = String(text).trim();
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(t);
  if (m) {
    const [y, mo, d, hh, mi, ss = "0", ms = "0"] = m.slice(1);
    const date = new Date(+y, +mo - 1, +d, +hh, +mi, +ss, +ms.padEnd(3, "0"));
    const same = date.getFullYear() === +y && date.getMonth() === +mo - 1 && date.getDate() === +d &&
      date.getHours() === +hh && date.getMinutes() === +mi;
    return same ? date : null;
  }
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(t)) {
    const date = new Date(t);
    return Number.isNaN(date.getTime()) ? null : date;
  }
  return null;
}

export function fmtAgo(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function fmtJson(value) {
  return JSON.stringify(value, null, 2);
}

/**
 * A banner saying what went wrong, with the hub's problem detail when there is one:
 * its title and detail, and the field, header or parameter it names.
 */
export function errorBox(err) {
  const problem = err && err.problem;
  const title = problem && problem.title && problem.title !== err.message ? `${problem.title}: ` : "";
  const text = err && err.status
    ? `${err.status} ${title}${err.message}`
    : String(err && err.message ? err.message : err);
  const named = problem ? ["field", "attribute", "index", "header", "limit"].filter((k) => problem[k] != null) : [];
  return h("div", { class: "error", role: "alert" },
    text,
    named.length ? h("div", { class: "small" }, named.map((k) => `${k}: ${problem[k]}`).join(" · ")) : null);
}

/** A small status label: healthy, failing, disabled, ... */
export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

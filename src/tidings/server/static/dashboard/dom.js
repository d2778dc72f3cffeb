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

export function table(headers, rows, attrs = {}) {
  return h(
    "table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
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

/** A banner saying what went wrong, with the hub's problem detail when there is one. */
export function errorBox(err) {
  const text = err && err.status
    ? `${err.status} ${err.message}`
    : String(err && err.message ? err.message : err);
  return h("div", { class: "error", role: "alert" }, text);
}

/** A small status label: healthy, failing, disabled, ... */
export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

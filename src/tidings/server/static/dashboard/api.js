// The hub's public HTTP API as the dashboard uses it, with the user's token.
//
// The token lives in sessionStorage (this tab only, gone when it closes). It goes as
// Authorization: Bearer on every fetch, and as a subprotocol on the WebSocket, which
// cannot carry headers (see /static/tidings.js); never in a URL, which logs keep. A hub
// with tokens off needs none.

import { Tidings } from "../tidings.js";

const TOKEN_KEY = "tidings.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  if (live) {
    live.close();
    live = null;
  }
}

/** An answer other than 2xx: `status`, and the RFC 9457 problem when the hub sent one. */
export class ApiError extends Error {
  constructor(status, detail, problem = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

/**
 * fetch one API path; resolves to the parsed JSON (or text), throws ApiError. A body
 * goes as JSON, typed `contentType` (a publish takes application/cloudevents+json).
 */
export async function call(method, path, body = undefined, contentType = "application/json") {
  const headers = {};
  const token = getToken();
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = contentType;
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const type = resp.headers.get("content-type") || "";
  if (!resp.ok) {
    let problem = null;
    let detail = resp.statusText;
    if (type.includes("json")) {
      problem = await resp.json().catch(() => null);
      if (problem && problem.detail) detail = problem.detail;
    }
    throw new ApiError(resp.status, detail, problem);
  }
  if (resp.status === 204) return null;
  return type.includes("json") ? resp.json() : resp.text();
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);
export const patch = (path, body) => call("PATCH", path, body);

/** A name as one path segment. */
export const enc = encodeURIComponent;

/** Prometheus text (0.0.4) to {name: [{labels, value}]}. */
export function parsePrometheus(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) {
        labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      }
    }
    (out[m[1]] ||= []).push({ labels, value: Number(m[4]) });
  }
  return out;
}

/** The one sample of a family without labels, or the sum of its samples. */
export function metric(samples, name, where = null) {
  const rows = (samples && samples[name]) || [];
  const hits = where ? rows.filter((r) => Object.entries(where).every(([k, v]) => r.labels[k] === v)) : rows;
  if (hits.length === 0) return null;
  return hits.reduce((a, r) => a + r.value, 0);
}

let live = null;

/** The page's one WebSocket client (tidings.js), opened on first use with the token. */
export function liveClient() {
  if (!live || live.closed) {
    live = new Tidings(location.origin, { token: getToken() || undefined, maxDelay: 5000 });
  }
  return live;
}

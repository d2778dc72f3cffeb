// What the hub looks like over time. The hub keeps a history of its own metrics (one
// point every 10 s for a day: GET /v1/metrics/history); the sampler loads it when the
// page opens, so charts open full, and adds what is new every interval. Between two
// points of the hub's, it reads the topics, the consumer groups, the webhooks and
// /metrics every few seconds and keeps the last minutes of samples: the live end of a
// chart, and the cards, are differences between those samples.

import { ApiError, get, parsePrometheus } from "./api.js";

const KEEP_MS = 10 * 60 * 1000;
const HISTORY_MS = 24 * 3600 * 1000;
// What the charts use of the hub's history (see /openapi.json for every family).
const HISTORY_FAMILIES = ["events_in", "events_out", "group_lag", "webhook_attempts", "fsync_latency", "cpu"];

export class Sampler {
  constructor(intervalMs) {
    this.intervalMs = intervalMs;
    this.samples = []; // {t, topics, groups, webhooks, metrics}, oldest first
    this.error = null; // the last failure of the topic listing: no token, hub down
    this.metricsError = null; // /metrics needs the admin scope when tokens are on
    this.listeners = new Set();
    this._timer = null;
    this._running = false;
    // The hub's history: {interval (s), times (ms since the epoch), series: [{name, labels,
    // unit, values}]}, null until loaded; historyError: why it is not (an admin token is
    // needed, or a hub without it): the charts then show what this tab sampled.
    this.history = null;
    this.historyError = null;
    this._historyDue = 0;
  }

  start() {
    if (this._timer) return;
    const tick = async () => {
      // A tab in the background asks the hub nothing; it samples again when shown.
      if (!document.hidden || this.samples.length === 0) await this.sample();
      this._timer = setTimeout(tick, this.intervalMs);
    };
    this._timer = setTimeout(tick, 0);
  }

  /** Sample now (also called after an action, so the page shows its effect at once). */
  async sample() {
    if (this._running) return;
    this._running = true;
    try {
      const t = Date.now();
      const [topics, groups, webhooks, metrics] = await Promise.allSettled([
        get("/v1/topics"),
        get("/v1/groups"),
        get("/v1/webhooks"),
        get("/metrics"),
        // Due, or the samples were dropped (a new token): the history too.
        t >= this._historyDue || this.samples.length === 0 ? this.loadHistory(t) : null,
      ]);
      if (topics.status === "rejected") {
        this.error = topics.reason;
        this._notify();
        return;
      }
      this.error = null;
      this.metricsError = metrics.status === "rejected" ? metrics.reason : null;
      this.webhooksError = webhooks.status === "rejected" ? webhooks.reason : null;
      this.samples.push({
        t,
        topics: topics.value.topics,
        groups: groups.status === "fulfilled" ? groups.value.groups : [],
        webhooks: webhooks.status === "fulfilled" ? webhooks.value.webhooks : null,
        metrics: metrics.status === "fulfilled" ? parsePrometheus(metrics.value) : null,
      });
      while (this.samples.length > 2 && this.samples[0].t < t - KEEP_MS) this.samples.shift();
      this._notify();
    } finally {
      this._running = false;
    }
  }

  /** Load the hub's history, or what is new of it since the last load. */
  async loadHistory(now = Date.now()) {
    const h = this.history;
    const since = h && h.times.length ? h.times[h.times.length - 1] + 1 : now - HISTORY_MS;
    try {
      const got = await get(`/v1/metrics/history?series=${HISTORY_FAMILIES.join(",")}&since=${since}`);
      this.history = h ? joinHistory(h, got, now - HISTORY_MS) : got;
      this.historyError = null;
      // Next when the hub has made its next point (its interval, 10 s by default).
      this._historyDue = now + Math.max(1000, got.interval * 1000);
    } catch (err) {
      this.historyError = err;
      this._historyDue = now + 30_000;
    }
  }

  /** A chart's data over the day: the hub's history of `family`, a column per series
   * named label(series) (null: left out; series of one name are summed), then the live samples after its last point, whose values
   * live(prev, cur, dt seconds) gives as {column: value}. Returns [xs (s), {column: values}]. */
  timeline(family, label, live) {
    const xs = [];
    const columns = {};
    const h = this.history;
    let end = -Infinity;
    if (h && h.times.length) {
      for (const t of h.times) xs.push(t / 1000);
      for (const s of h.series) {
        const name = s.name === family ? label(s) : null;
        if (name == null) continue;
        const col = (columns[name] ||= new Array(xs.length).fill(null));
        s.values.forEach((v, i) => { if (v != null) col[i] = (col[i] || 0) + v; });
      }
      end = h.times[h.times.length - 1];
    }
    for (let i = 1; i < this.samples.length; i++) {
      const prev = this.samples[i - 1];
      const cur = this.samples[i];
      const dt = (cur.t - prev.t) / 1000;
      if (cur.t <= end || dt <= 0) continue;
      const values = live(prev, cur, dt);
      xs.push(cur.t / 1000);
      for (const name of Object.keys(values)) columns[name] ||= new Array(xs.length - 1).fill(null);
      for (const [name, col] of Object.entries(columns)) col.push(values[name] ?? null);
    }
    return [xs, columns];
  }

  get last() {
    return this.samples[this.samples.length - 1] || null;
  }

  /** Call fn(sampler) after every sample; returns a function that stops it. */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  _notify() {
    for (const fn of this.listeners) {
      try {
        fn(this);
      } catch (err) {
        console.error(err);
      }
    }
  }

  /** Per pair of samples: [t (s), value] where value(prev, cur, dt seconds) is not null. */
  series(value) {
    const xs = [];
    const ys = [];
    for (let i = 1; i < this.samples.length; i++) {
      const prev = this.samples[i - 1];
      const cur = this.samples[i];
      const dt = (cur.t - prev.t) / 1000;
      if (dt <= 0) continue;
      xs.push(cur.t / 1000);
      ys.push(value(prev, cur, dt));
    }
    return [xs, ys];
  }
}

/** `older` with the points of `newer` after it, and none before `keepFrom` (ms). */
function joinHistory(older, newer, keepFrom) {
  const key = (s) => `${s.name}\u0000${JSON.stringify(s.labels)}`;
  const times = [...older.times, ...newer.times];
  const cut = times.findIndex((t) => t >= keepFrom);
  const drop = cut < 0 ? times.length : cut;
  const byKey = new Map();
  for (const s of older.series) {
    byKey.set(key(s), { ...s, values: [...s.values, ...new Array(newer.times.length).fill(null)] });
  }
  newer.series.forEach((s) => {
    const k = key(s);
    const have = byKey.get(k) || { ...s, values: new Array(times.length).fill(null) };
    have.values.splice(older.times.length, newer.times.length, ...s.values);
    byKey.set(k, have);
  });
  const series = [...byKey.values()]
    .map((s) => ({ ...s, values: s.values.slice(drop) }))
    .filter((s) => s.values.some((v) => v != null));
  return { interval: newer.interval, times: times.slice(drop), series };
}

export function isAuthError(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403);
}

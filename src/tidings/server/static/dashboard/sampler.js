// What the hub looks like over time: every few seconds the sampler reads the topics,
// the consumer groups, the webhooks and /metrics, and keeps the last minutes of
// samples. Rates (events/s, fsync latency, CPU) and lag over time are differences
// between samples; nothing is stored on the hub for them.

import { ApiError, get, parsePrometheus } from "./api.js";

const KEEP_MS = 10 * 60 * 1000;

export class Sampler {
  constructor(intervalMs) {
    this.intervalMs = intervalMs;
    this.samples = []; // {t, topics, groups, webhooks, metrics}, oldest first
    this.error = null; // the last failure of the topic listing: no token, hub down
    this.metricsError = null; // /metrics needs the admin scope when tokens are on
    this.listeners = new Set();
    this._timer = null;
    this._running = false;
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

export function isAuthError(err) {
  return err instanceof ApiError && (err.status === 401 || err.status === 403);
}

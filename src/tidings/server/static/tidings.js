// tidings.js: the browser client of a tidings hub, an ES module with no build step.
//
//   import { Tidings } from "http://127.0.0.1:8700/static/tidings.js";
//   const hub = new Tidings("http://127.0.0.1:8700", { token });
//   const sub = hub.subscribe("orders", {
//     types: ["order.*"], from: "latest",
//     onEvent(record) { ... },          // {topic, partition, offset, event, resume}
//     onError(err) { ... },             // the subscription ended: err.status, err.detail
//   });
//   await hub.publish("orders", { type: "order.placed", data: { id: "o-1" } });
//   sub.close(); hub.close();
//
// One WebSocket per Tidings object (GET /v1/ws, subprotocol tidings.v1; the frames are
// those of tidings/core/session.py). Browsers cannot set headers on a WebSocket, so the
// token goes as a second subprotocol offered beside tidings.v1, tidings.bearer.<the token
// in base64url>, which the hub reads and never selects: never in the URL, which logs keep.
// Every event frame carries a resume token; each subscription keeps the one
// of the last event it handed to onEvent. When the socket closes for any reason but
// close(), the client reconnects with capped, jittered exponential backoff and
// subscribes again from those tokens: no event is missed and none repeated.
//
// A publish gets an id here when it has none, and is sent again after a reconnect
// until the hub answers "published": the hub's dedupe window makes the resend safe.

const SUBPROTOCOL = "tidings.v1";
const BEARER_PROTOCOL = "tidings.bearer.";
const NORMAL_CLOSURE = 1000;
// Answers that mean "not now" rather than "never".
const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);

/** An error the hub answered, or the client's own: `status`, `detail`, `problem`. */
export class TidingsError extends Error {
  constructor(detail, { status = 0, problem = null, frame = null } = {}) {
    super(detail);
    this.name = "TidingsError";
    this.status = status;
    this.detail = detail;
    this.problem = problem;
    this.frame = frame;
  }
}

function wsUrl(url) {
  const u = new URL("/v1/ws", url.replace(/\/+$/, "") + "/");
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

/** The subprotocols to offer: tidings.v1, and the token (UTF-8, base64url) if any. */
function protocols(token) {
  if (!token) return [SUBPROTOCOL];
  let binary = "";
  for (const byte of new TextEncoder().encode(token)) binary += String.fromCharCode(byte);
  const encoded = btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return [SUBPROTOCOL, BEARER_PROTOCOL + encoded];
}

function newId() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") {
    return globalThis.crypto.randomUUID();
  }
  const hex = (n) => Math.floor(Math.random() * 16 ** n).toString(16).padStart(n, "0");
  return `${hex(8)}-${hex(4)}-4${hex(3)}-${hex(4)}-${hex(6)}${hex(6)}`;
}

function frameError(frame) {
  return new TidingsError(frame.detail || frame.title || "error", {
    status: frame.status || 0,
    problem: frame.problem || null,
    frame,
  });
}

/** One subscription: made by Tidings.subscribe, ended by close(). */
export class Subscription {
  constructor(hub, id, topic, { types = [], from = "latest", onEvent, onError } = {}) {
    if (typeof onEvent !== "function") throw new TypeError("subscribe needs onEvent(record)");
    this.hub = hub;
    this.id = id;
    this.topic = topic;
    this.types = typeof types === "string" ? types.split(",").map((t) => t.trim()) : [...types];
    this.from = from;
    this.onEvent = onEvent;
    this.onError = onError || ((err) => console.error("tidings subscription", topic, err));
    /** The resume token after the last event handed to onEvent (null before the hub said). */
    this.position = null;
    this.closed = false;
  }

  frame() {
    const from = this.position ?? this.from;
    return { type: "subscribe", id: this.id, topic: this.topic, types: this.types, from };
  }

  /** Stop: no onEvent call after this returns. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.hub._forget(this);
  }

  _fail(err) {
    if (this.closed) return;
    this.closed = true;
    this.hub._forget(this, false);
    this.onError(err);
  }
}

/** A connection to one hub: subscriptions and publishes over one WebSocket. */
export class Tidings {
  /**
   * @param {string} url the hub, e.g. "http://127.0.0.1:8700"
   * @param {{token?: string, initialDelay?: number, maxDelay?: number,
   *          maxReconnects?: number, publishTimeout?: number}} options
   *   delays in ms; maxReconnects bounds the connections in a row that fail or drop
   *   within maxDelay of opening (default: no bound).
   */
  constructor(url, options = {}) {
    this.url = wsUrl(url);
    this.protocols = protocols(options.token);
    this.initialDelay = options.initialDelay ?? 100;
    this.maxDelay = options.maxDelay ?? 5000;
    this.maxReconnects = options.maxReconnects ?? Infinity;
    this.publishTimeout = options.publishTimeout ?? 30000;
    this.subs = new Map(); // id -> Subscription
    this.pending = new Map(); // ref -> {frame, resolve, reject, timer}
    this.ws = null;
    this.open = false;
    this.closed = false;
    this.failures = 0; // connections in a row that failed or did not last maxDelay
    this._openedAt = 0;
    this.reconnects = 0; // sockets opened after the first
    this._opened = 0;
    this._timer = null;
    this._nextSub = 0;
    this._nextRef = 0;
  }

  /** Follow a topic; see the module comment for the options. */
  subscribe(topic, options = {}) {
    if (this.closed) throw new TidingsError("this client is closed");
    const sub = new Subscription(this, `s${++this._nextSub}`, topic, options);
    this.subs.set(sub.id, sub);
    if (this.open) this._send(sub.frame());
    else this._connect();
    return sub;
  }

  /** Publish one event (CloudEvents attributes, at least `type`); resolves to
   *  {id, partition, offset} once the hub has it, over the same socket. */
  publish(topic, event) {
    if (this.closed) return Promise.reject(new TidingsError("this client is closed"));
    const ev = { ...event };
    if (ev.id == null) ev.id = newId(); // makes a resend after a reconnect safe
    const ref = ++this._nextRef;
    const frame = { type: "publish", ref, topic, event: ev };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new TidingsError(`no answer to publish within ${this.publishTimeout} ms`));
      }, this.publishTimeout);
      this.pending.set(ref, { frame, resolve, reject, timer });
      if (this.open) this._send(frame);
      else this._connect();
    });
  }

  /** Close the socket and end every subscription; pending publishes are rejected. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._timer);
    for (const sub of this.subs.values()) sub.closed = true;
    this.subs.clear();
    this._rejectAll(new TidingsError("this client is closed"));
    if (this.ws) this.ws.close(NORMAL_CLOSURE);
    this.ws = null;
  }

  // -- socket ----------------------------------------------------------------------------

  _connect() {
    if (this.ws || this.closed || this._timer) return;
    let ws;
    try {
      ws = new WebSocket(this.url, this.protocols);
    } catch (err) {
      this._failAll(new TidingsError(`cannot open ${this.url}: ${err}`));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.open = true;
      this._openedAt = Date.now();
      if (this._opened++ > 0) this.reconnects++;
      for (const sub of this.subs.values()) this._send(sub.frame());
      for (const p of this.pending.values()) this._send(p.frame);
    };
    ws.onmessage = (msg) => {
      if (ws === this.ws) this._receive(msg.data);
    };
    ws.onclose = (ev) => {
      if (ws === this.ws) this._closed(ev);
    };
    ws.onerror = () => {}; // a close event follows, with what there is to know
  }

  _closed(ev) {
    const wasOpen = this.open;
    this.ws = null;
    this.open = false;
    if (this.closed) return;
    if (ev.code === NORMAL_CLOSURE) {
      this._failAll(new TidingsError("the hub closed the connection", { status: 0 }));
      return;
    }
    if (ev.code >= 4400 && ev.code < 4500 && !RETRY_STATUSES.has(ev.code - 4000)) {
      this._failAll(new TidingsError(ev.reason || `closed with ${ev.code}`, {
        status: ev.code - 4000,
      }));
      return;
    }
    // A socket that lived a while earns an immediate reconnect; one that failed or
    // dropped soon after it opened waits longer each time, so a hub that accepts and
    // closes at once is not hammered.
    if (wasOpen && Date.now() - this._openedAt >= this.maxDelay) this.failures = 0;
    else this.failures++;
    if (this.failures > this.maxReconnects) {
      const n = this.maxReconnects;
      this._failAll(new TidingsError(`gave up on ${this.url} after ${n} reconnects`));
      return;
    }
    if (this.subs.size === 0 && this.pending.size === 0) return; // reconnect when needed
    // The first attempt after a drop goes at once; each failure waits longer.
    const full = this.failures === 0
      ? 0
      : Math.min(this.maxDelay, this.initialDelay * 2 ** Math.min(this.failures - 1, 30));
    const delay = full - Math.random() * (full / 2);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }

  _send(frame) {
    if (this.ws && this.open) this.ws.send(JSON.stringify(frame));
  }

  _receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "event": {
        const sub = this.subs.get(frame.sub);
        if (!sub || sub.closed) return;
        sub.position = frame.resume;
        const { topic, partition, offset, event, resume } = frame;
        sub.onEvent({ topic, partition, offset, event, resume });
        return;
      }
      case "subscribed": {
        const sub = this.subs.get(frame.id);
        // Where "latest" or a time landed: a reconnect goes on from here.
        if (sub && sub.position === null) sub.position = frame.resume;
        return;
      }
      case "published": {
        const p = this.pending.get(frame.ref);
        if (!p) return;
        this.pending.delete(frame.ref);
        clearTimeout(p.timer);
        const { id, partition, offset } = frame;
        const answer = { id, partition, offset };
        if (frame.duplicate) answer.duplicate = true;
        p.resolve(answer);
        return;
      }
      case "error":
        this._error(frame);
        return;
      default:
        return; // a frame this client does not use
    }
  }

  _error(frame) {
    const err = frameError(frame);
    const retry = RETRY_STATUSES.has(err.status);
    const sub = frame.sub != null ? this.subs.get(frame.sub) : null;
    if (sub) {
      // The subscription is gone on the hub: give up, or come back through a reconnect.
      if (retry && this.ws) this.ws.close(4000, "resubscribe");
      else sub._fail(err);
      return;
    }
    const p = this.pending.get(frame.ref);
    if (p) {
      if (retry) return; // sent again after the next reconnect, or timed out
      this.pending.delete(frame.ref);
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  _forget(sub, unsubscribe = true) {
    this.subs.delete(sub.id);
    if (unsubscribe && this.open) this._send({ type: "unsubscribe", id: sub.id });
  }

  _failAll(err) {
    for (const sub of [...this.subs.values()]) sub._fail(err);
    this._rejectAll(err);
  }

  _rejectAll(err) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }
}

export default Tidings;

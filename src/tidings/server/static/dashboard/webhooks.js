// Webhooks: endpoints with their success rate and last attempts, the attempts log,
// dead letters, disabled endpoints, and the actions: enable or disable, replay since a
// time, send a test event, send dead letters again.

import { enc, get, metric, patch, post } from "./api.js";
import { badge, errorBox, fill, fmtAgo, fmtInputTime, fmtNumber, fmtTime, h, parseInputTime, table } from "./dom.js";

const LAST_ATTEMPTS = 5;
const ATTEMPTS_SHOWN = 100;

function hookUrl(id) {
  return `/v1/webhooks/${enc(id)}`;
}

/** Successes over attempts since the hub started, from /metrics; null without it. */
function successRate(samples, id) {
  if (!samples) return null;
  const rows = (samples.tidings_webhook_attempts_total || []).filter((r) => r.labels.webhook === id);
  const total = rows.reduce((a, r) => a + r.value, 0);
  if (total === 0) return null;
  return metric(samples, "tidings_webhook_attempts_total", { webhook: id, outcome: "success" }) / total;
}

function outcomeBadge(a) {
  const text = a.status != null ? `${a.outcome} ${a.status}` : a.outcome;
  return badge(text, a.outcome === "success" ? "ok" : "bad");
}

function stateBadge(w) {
  return badge(w.state, { healthy: "ok", failing: "warn", disabled: "bad" }[w.state] || "info");
}

function whyFailing(attempt) {
  if (!attempt || attempt.outcome === "success") return "";
  return attempt.error || (attempt.status != null ? `answered ${attempt.status}: ${attempt.response || ""}` : "");
}

export function mount(root, params, { sampler, go }) {
  const list = h("section", { id: "webhook-list" });
  const detail = h("section", { id: "webhook-detail" });
  fill(root, h("h1", {}, "Webhooks"), list, detail);
  const lastAttempts = {}; // id -> newest first
  let selected = null; // {id, view}
  let loading = false;

  async function loadLast(hooks) {
    if (loading) return;
    loading = true;
    try {
      await Promise.all(hooks.slice(0, 50).map(async (w) => {
        try {
          lastAttempts[w.id] = (await get(`${hookUrl(w.id)}/attempts?limit=${LAST_ATTEMPTS}`)).attempts;
        } catch {
          delete lastAttempts[w.id];
        }
      }));
    } finally {
      loading = false;
    }
    renderList();
  }

  function renderList() {
    const cur = sampler.last;
    if (!cur) return;
    if (cur.webhooks == null) {
      fill(list, errorBox(sampler.webhooksError || "the webhooks are not available"));
      return;
    }
    const hooks = [...cur.webhooks].sort((a, b) =>
      (a.state === "healthy") - (b.state === "healthy") || a.id.localeCompare(b.id));
    const rows = hooks.map((w) => {
      const last = lastAttempts[w.id] || [];
      const rate = successRate(cur.metrics, w.id);
      const pick = (ev) => {
        ev.preventDefault();
        go("webhooks", { id: w.id });
      };
      const isSel = selected && selected.id === w.id;
      return h("tr", { class: isSel ? "selected" : "", dataset: { id: w.id, state: w.state } },
        h("td", {}, h("a", { href: "#", onclick: pick }, w.id), w.description ? h("div", { class: "small muted" }, w.description) : null),
        h("td", { class: "mono small" }, w.url),
        h("td", {}, w.topics.join(", "), w.types.length ? h("div", { class: "small muted" }, w.types.join(", ")) : null),
        h("td", {}, stateBadge(w), w.disabled_reason ? h("div", { class: "small" }, w.disabled_reason) : null),
        h("td", { class: "num" }, rate == null ? "–" : `${fmtNumber(rate * 100)} %`),
        h("td", {}, last.map(outcomeBadge), last[0] ? h("div", { class: "small reason" }, whyFailing(last[0])) : null),
        h("td", { class: "small" }, fmtAgo(w.last_success)));
    });
    fill(list, rows.length
      ? table(["endpoint", "url", "topics / types", "state", "success", "last attempts (newest first)", "last success"], rows, { class: "webhooks" })
      : h("p", { class: "muted" }, "No endpoints: register one with POST /v1/webhooks or `tidings webhooks create`."));
  }

  function select(id) {
    if (selected && selected.id === id) return;
    if (selected) selected.view.destroy();
    selected = null;
    fill(detail);
    if (id) selected = { id, view: webhookDetail(detail, id, sampler, go) };
    renderList();
  }

  const off = sampler.on(() => {
    renderList();
    if (sampler.last && sampler.last.webhooks) loadLast(sampler.last.webhooks);
    if (selected) selected.view.refresh();
  });
  renderList();
  if (sampler.last && sampler.last.webhooks) loadLast(sampler.last.webhooks);
  select(params.get("id"));
  return {
    update(p) {
      select(p.get("id"));
    },
    unmount() {
      off();
      if (selected) selected.view.destroy();
    },
  };
}

function webhookDetail(root, id, sampler, go) {
  const head = h("div");
  const result = h("div", { id: "webhook-result", "aria-live": "polite" });
  const attempts = h("div", { id: "attempts" });
  const dead = h("div", { id: "webhook-dead-letters" });
  const filter = h("select", { id: "attempts-filter" },
    h("option", { value: "" }, "all attempts"),
    h("option", { value: "failed" }, "failed"),
    h("option", { value: "succeeded" }, "succeeded"));
  filter.addEventListener("change", () => refresh());
  const enableBtn = h("button", { type: "button", id: "webhook-enable" }, "Enable");
  const testBtn = h("button", { type: "button", id: "webhook-test" }, "Send a test event");
  // A text field, not datetime-local, whose look follows the browser's locale (12 h in
  // en-US): every time on this page is 24 h local.
  const since = h("input", { id: "replay-since", placeholder: "YYYY-MM-DD HH:MM:SS", size: 19,
    value: fmtInputTime(new Date(Date.now() - 3600_000)) });
  const replayBtn = h("button", { type: "submit", id: "webhook-replay" }, "Replay");
  const redeadBtn = h("button", { type: "button", id: "webhook-replay-dead" }, "Send dead letters again");
  let view = null;

  // fn answers what to show, or {failed: what} when the hub did it and it went wrong
  // (a test event the endpoint refused): shown as a failure, never in green.
  async function act(what, fn) {
    fill(result, h("span", { class: "muted" }, `${what}…`));
    try {
      const answer = await fn();
      fill(result, answer && answer.failed
        ? h("div", { class: "error", role: "alert", "data-outcome": "failed" }, `${what} failed: `, answer.failed)
        : h("div", { class: "ok", "data-outcome": "success" }, `${what}: `, answer));
      await refresh();
      sampler.sample();
    } catch (err) {
      fill(result, errorBox(err));
    }
  }

  enableBtn.addEventListener("click", () => {
    const enabled = !(view && view.enabled);
    act(enabled ? "Enable" : "Disable", async () => {
      const w = await patch(hookUrl(id), { enabled });
      return `the endpoint is ${w.state}`;
    });
  });
  testBtn.addEventListener("click", () => act("Test event", async () => {
    const answer = await post(`${hookUrl(id)}/test`);
    const a = answer.attempt;
    const shown = h("span", {}, outcomeBadge(a), ` in ${fmtNumber(a.latency_ms)} ms `, whyFailing(a));
    return a.outcome === "success" ? shown : { failed: shown };
  }));
  const replayForm = h("form", { class: "controls", onsubmit: (ev) => {
    ev.preventDefault();
    const at = parseInputTime(since.value);
    if (!at) {
      fill(result, errorBox(`Not a time: "${since.value}". Write it as YYYY-MM-DD HH:MM:SS, 24 h, local time.`));
      return;
    }
    const when = at.toISOString();
    act(`Replay since ${fmtTime(at)}`, async () => {
      const answer = await post(`${hookUrl(id)}/replay`, { since: when });
      return `groups moved back to ${Object.entries(answer.topics).map(([t, p]) => `${t} ${p}`).join(", ")}`;
    });
  } }, h("label", {}, "Deliver again every event since ", since), replayBtn);
  redeadBtn.addEventListener("click", () => act("Dead letters", async () => {
    const answer = await post(`${hookUrl(id)}/dead-letters/replay`);
    return `${answer.replaying} on their way again`;
  }));

  const back = h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go("webhooks"); } }, "all endpoints");
  fill(root,
    h("h2", {}, `${id} `, h("small", {}, "(", back, ")")),
    head,
    h("h3", {}, "Actions"),
    h("div", { class: "controls" }, enableBtn, testBtn, redeadBtn), replayForm, result,
    h("h3", {}, "Attempts ", filter), attempts,
    h("h3", {}, "Dead letters"), dead);

  async function refresh() {
    try {
      const status = filter.value ? `&status=${filter.value}` : "";
      const [w, log, dl] = await Promise.all([
        get(hookUrl(id)),
        get(`${hookUrl(id)}/attempts?limit=${ATTEMPTS_SHOWN}${status}`),
        get(`${hookUrl(id)}/dead-letters?limit=100`),
      ]);
      view = w;
      enableBtn.textContent = w.enabled ? "Disable" : "Enable";
      const rate = successRate(sampler.last && sampler.last.metrics, id);
      const kv = (k, v) => h("tr", {}, h("th", {}, k), h("td", {}, v));
      fill(head, table(["", ""], [
        kv("state", h("span", { id: "webhook-state", dataset: { state: w.state } }, stateBadge(w), w.disabled_reason ? ` ${w.disabled_reason}` : "")),
        kv("url", h("code", {}, w.url)),
        kv("description", w.description || "–"),
        kv("topics", w.topics.join(", ")),
        kv("types", w.types.length ? w.types.join(", ") : "all"),
        kv("ordering / concurrency / rate limit", `${w.ordering} / ${w.concurrency ?? "–"} / ${w.rate_limit ?? "none"}`),
        kv("success rate", rate == null ? "–" : `${fmtNumber(rate * 100)} % since the hub started`),
        kv("failing since", w.failing_since ? `${fmtTime(w.failing_since)} (${fmtAgo(w.failing_since)})` : "–"),
        kv("last success", w.last_success ? `${fmtTime(w.last_success)} (${fmtAgo(w.last_success)})` : "never"),
        kv("waiting (lag)", Object.entries(w.lag || {}).map(([t, n]) => `${t}: ${n}`).join(", ") || "–"),
        kv("in flight / retrying", `${w.in_flight ?? 0} / ${w.retrying ?? 0}`),
      ], { class: "kv" }));
      fill(attempts, log.attempts.length
        ? table(["time", "trigger", "event", "position", "attempt", "outcome", "latency", "error / answer"],
          log.attempts.map((a) => h("tr", { class: `attempt ${a.outcome}`, dataset: { outcome: a.outcome } },
            h("td", { class: "nowrap" }, fmtTime(a.time)),
            h("td", {}, a.trigger),
            h("td", { class: "mono small" }, a.msg_id),
            h("td", { class: "mono" }, a.topic != null ? `${a.topic} ${a.partition}:${a.offset}` : "–"),
            h("td", { class: "num" }, a.attempt),
            h("td", {}, outcomeBadge(a)),
            h("td", { class: "num" }, `${fmtNumber(a.latency_ms)} ms`),
            h("td", { class: "reason small" }, a.error || "", a.response ? h("div", { class: "mono" }, a.response) : null))),
          { class: "attempts" })
        : h("p", { class: "muted" }, "No attempts yet."));
      fill(dead, dl.dead_letters.length
        ? table(["dead-lettered", "event", "position", "attempts", "reason", ""],
          dl.dead_letters.map((d) => h("tr", { class: "dead-letter" },
            h("td", { class: "nowrap" }, fmtTime(d.time)),
            h("td", { class: "mono small" }, d.msg_id),
            h("td", { class: "mono" }, `${d.topic} ${d.partition}:${d.offset}`),
            h("td", { class: "num" }, d.attempts),
            h("td", { class: "reason" }, d.reason),
            h("td", {}, d.replaying ? badge("sending again", "info") : ""))),
          { class: "dead-letters" })
        : h("p", { class: "muted" }, "None."));
    } catch (err) {
      fill(head, errorBox(err));
    }
  }

  refresh();
  return { refresh, destroy() {} };
}

// Consumer groups: lag per partition over time, pending and redelivered counts, dead
// letters with their reason, and the actions: seek, and re-drive dead letters. The
// hub's own groups (g.internal: webhook and re-drive cursors) are shown read-only:
// no group route reaches them, so they have no actions.

import { enc, get, post } from "./api.js";
import { TimeChart } from "./chart.js";
import { badge, errorBox, fill, fmtInputTime, fmtJson, fmtNumber, fmtTime, h, parseInputTime, table } from "./dom.js";
import { eventDetail } from "./events.js";

const DEAD_LETTERS_SHOWN = 200;

function groupUrl(topic, group) {
  return `/v1/topics/${enc(topic)}/groups/${enc(group)}`;
}

function findGroup(sample, topic, name) {
  return sample && sample.groups.find((g) => g.topic === topic && g.name === name);
}

export function mount(root, params, { sampler, go }) {
  const list = h("section", { id: "group-list" });
  const detail = h("section", { id: "group-detail" });
  fill(root, h("h1", {}, "Consumer groups"), list, detail);
  let selected = null; // {topic, name, view}

  function renderList() {
    const cur = sampler.last;
    if (!cur) return;
    const rows = cur.groups.map((g) => {
      const webhook = g.internal && g.name.startsWith("webhook.");
      const redrive = g.internal && g.name.startsWith("redrive.");
      const pick = (ev) => {
        ev.preventDefault();
        go("groups", { topic: g.topic, group: g.name });
      };
      const isSel = selected && selected.topic === g.topic && selected.name === g.name;
      return h("tr", { class: isSel ? "selected" : "", dataset: { topic: g.topic, group: g.name } },
        h("td", {}, g.topic),
        h("td", {}, h("a", { href: "#", onclick: pick }, g.name), " ",
          webhook ? badge("webhook", "info") : null, redrive ? badge("re-drive cursor", "info") : null,
          g.internal && !webhook && !redrive ? badge("hub", "info") : null),
        h("td", { class: "num" }, fmtNumber(g.lag)),
        h("td", { class: "num" }, fmtNumber(g.pending)),
        h("td", { class: "num" }, fmtNumber(g.delivered)),
        h("td", { class: "num" }, fmtNumber(g.redelivered)),
        h("td", { class: g.dead_lettered ? "num warn" : "num" }, fmtNumber(g.dead_lettered)));
    });
    fill(list, rows.length
      ? table(["topic", "group", "lag", "pending", "delivered", "redelivered", "dead-lettered"], rows, { class: "groups" })
      : h("p", { class: "muted" }, "No consumer groups yet."));
  }

  function select(topic, name) {
    if (selected && selected.topic === topic && selected.name === name) return;
    if (selected) selected.view.destroy();
    selected = null;
    fill(detail);
    if (topic && name) selected = { topic, name, view: groupDetail(detail, topic, name, sampler, go) };
    renderList();
  }

  const off = sampler.on(() => {
    renderList();
    if (selected) selected.view.render();
  });
  renderList();
  select(params.get("topic"), params.get("group"));
  return {
    update(p) {
      select(p.get("topic"), p.get("group"));
    },
    unmount() {
      off();
      if (selected) selected.view.destroy();
    },
  };
}

function groupDetail(root, topic, name, sampler, go) {
  const chart = new TimeChart({ title: "lag per partition", yLabel: "events" });
  const summary = h("div", { class: "cards" });
  const parts = h("div");
  const result = h("div", { id: "group-result", "aria-live": "polite" });
  const dead = h("div", { id: "dead-letters" });
  const eventBox = h("aside", { class: "detail", id: "dead-letter-detail" });

  const seekKind = h("select", { id: "seek-kind" },
    h("option", { value: "earliest" }, "the start (earliest)"),
    h("option", { value: "latest" }, "the end (latest): skip the backlog"),
    h("option", { value: "time" }, "a time"),
    h("option", { value: "token" }, "a position token"));
  // A text field, not datetime-local: that one shows the browser's locale (12 h in
  // en-US), and every time on this page is 24 h local.
  const seekTime = h("input", { id: "seek-time", placeholder: "YYYY-MM-DD HH:MM:SS", size: 19, hidden: true,
    value: fmtInputTime(new Date(Date.now() - 3600_000)) });
  const seekToken = h("input", { id: "seek-token", placeholder: "0:15,1:7", hidden: true });
  seekKind.addEventListener("change", () => {
    seekTime.hidden = seekKind.value !== "time";
    seekToken.hidden = seekKind.value !== "token";
  });
  const seekBtn = h("button", { type: "submit", id: "seek" }, "Seek");
  const redriveBtn = h("button", { type: "button", id: "redrive" }, "Re-drive dead letters");

  async function act(what, fn) {
    fill(result, h("span", { class: "muted" }, `${what}…`));
    try {
      const answer = await fn();
      fill(result, h("div", { class: "ok" }, `${what}: done. `, h("code", {}, JSON.stringify(answer))));
      await sampler.sample();
      await loadDeadLetters(true);
    } catch (err) {
      fill(result, errorBox(err));
    }
  }

  const seekForm = h("form", { class: "controls", onsubmit: (ev) => {
    ev.preventDefault();
    let to = seekKind.value;
    if (to === "time") {
      const when = parseInputTime(seekTime.value);
      if (!when) {
        fill(result, errorBox(`Not a time: "${seekTime.value}". Write it as YYYY-MM-DD HH:MM:SS, 24 h, local time.`));
        return;
      }
      to = when.toISOString();
    } else if (to === "token") {
      to = seekToken.value.trim();
    }
    if (!confirm(`Move ${name} on ${topic} to ${to}? Leases held now go stale.`)) return;
    act(`Seek to ${to}`, () => post(`${groupUrl(topic, name)}/seek`, { to }));
  } }, h("label", {}, "Seek to ", seekKind), seekTime, seekToken, seekBtn);
  redriveBtn.addEventListener("click", () => {
    act("Re-drive", () => post(`${groupUrl(topic, name)}/redrive`));
  });

  const back = h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go("groups"); } }, "all groups");
  // Shown for the hub's own groups instead of the actions (render() picks one).
  const internalNote = h("p", { class: "muted", id: "group-internal", hidden: true },
    "The hub keeps this group for itself: it is shown here, and no client may change it.",
    name.startsWith("webhook.") ? " Replay the webhook on its page." : "");
  const actions = h("div", { id: "group-actions", hidden: true },
    h("h3", {}, "Actions"), seekForm, h("div", { class: "controls" }, redriveBtn), result,
    h("h3", {}, "Dead letters"),
    h("div", { class: "split" }, dead, eventBox));
  fill(root,
    h("h2", {}, `${topic} / ${name} `, h("small", {}, "(", back, ")")),
    summary,
    h("section", { class: "panel" }, chart.el),
    parts,
    internalNote,
    actions);

  let deadKey = null;

  function dlqName(g) {
    return (g.config && g.config.dead_letter_topic) || `${topic}.dlq`;
  }

  async function loadDeadLetters(force = false) {
    const cur = sampler.last;
    const g = findGroup(cur, topic, name);
    if (!g || g.internal) return;
    const dlq = dlqName(g);
    const info = cur.topics.find((t) => t.name === dlq);
    const key = info ? `${info.events}:${info.partitions.map((p) => p.next_offset).join(",")}` : "none";
    if (!force && key === deadKey) return;
    deadKey = key;
    if (!info) {
      fill(dead, h("p", { class: "muted" }, `None: nothing was dead-lettered to ${dlq}.`));
      return;
    }
    try {
      const from = info.partitions
        .map((p) => `${p.partition}:${Math.max(p.first_offset, p.next_offset - DEAD_LETTERS_SHOWN)}`)
        .join(",");
      const read = await get(`/v1/topics/${enc(dlq)}/events?from=${enc(from)}&limit=1000`);
      // The re-drive cursor (redrive_cursor in tidings/core/consuming.py): one of the
      // hub's own groups, read from the listing since no group route reaches it.
      const cursor = findGroup(cur, dlq, dlq === `${topic}.dlq` ? `redrive.${name}` : `redrive.${topic}.${name}`);
      const committed = {};
      if (cursor) for (const p of cursor.partitions) committed[p.partition] = p.committed;
      const mine = read.records
        .filter((r) => r.event.dlqgroup === name && r.event.dlqtopic === topic)
        .reverse();
      if (mine.length === 0) {
        fill(dead, h("p", { class: "muted" }, `None of ${name}'s events are in ${dlq}.`));
        return;
      }
      const waiting = mine.filter((r) => r.offset >= (committed[r.partition] ?? 0)).length;
      redriveBtn.textContent = `Re-drive ${waiting} dead letter${waiting === 1 ? "" : "s"}`;
      const rows = mine.map((r) => {
        const ev = r.event;
        const done = r.offset < (committed[r.partition] ?? 0);
        const row = h("tr", { class: "dead-letter", dataset: { id: ev.id, offset: String(r.offset) },
          onclick: () => {
            for (const x of dead.querySelectorAll("tr.selected")) x.classList.remove("selected");
            row.classList.add("selected");
            fill(eventBox, eventDetail(r, { traceHref: (id) => `#/trace?id=${encodeURIComponent(id)}` }));
          } },
        h("td", { class: "nowrap", title: `published ${fmtTime(ev.time)}` }, ev.dlqtime ? fmtTime(ev.dlqtime) : "–"),
        h("td", {}, ev.type),
        h("td", { class: "reason" }, String(ev.dlqreason ?? "")),
        h("td", { class: "num" }, fmtNumber(ev.dlqdeliveries)),
        h("td", { class: "mono" }, `${ev.dlqpartition}:${ev.dlqoffset}`),
        h("td", {}, ev.correlationid || ""),
        h("td", {}, done ? badge("re-driven", "ok") : badge("waiting", "warn")));
        return row;
      });
      fill(dead,
        h("p", { class: "muted" }, `The last ${DEAD_LETTERS_SHOWN} of ${dlq}, newest first; ${waiting} not yet re-driven.`),
        table(["dead-lettered", "type", "reason", "deliveries", "from", "correlation", ""], rows, { class: "dead-letters" }));
    } catch (err) {
      fill(dead, errorBox(err));
    }
  }

  function render() {
    const g = findGroup(sampler.last, topic, name);
    if (!g) {
      fill(summary, errorBox(`No group ${name} on topic ${topic} (yet).`));
      return;
    }
    internalNote.hidden = !g.internal;
    actions.hidden = Boolean(g.internal);
    const card = (label, value, cls = "") => h("div", { class: `card ${cls}`, "data-metric": label },
      h("div", { class: "label" }, label), h("div", { class: "value" }, value));
    fill(summary,
      card("lag", fmtNumber(g.lag)),
      card("pending", fmtNumber(g.pending)),
      card("delivered", fmtNumber(g.delivered)),
      card("redelivered", fmtNumber(g.redelivered), g.redelivered ? "warn" : ""),
      card("dead-lettered", fmtNumber(g.dead_lettered), g.dead_lettered ? "warn" : ""),
      card("skipped (damage)", fmtNumber(g.skipped_events || 0), g.skipped_events ? "warn" : ""),
      h("div", { class: "card config" }, h("div", { class: "label" }, "config"), h("pre", {}, fmtJson(g.config))));
    // The hub's day of the group's lag, then the live samples, per partition too.
    const mine = (s) => (s.labels.topic === topic && s.labels.group === name ? "all partitions" : null);
    const [xs, lags] = sampler.timeline("group_lag", mine, (prev, cur) => {
      const sg = findGroup(cur, topic, name);
      const out = sg ? { "all partitions": sg.lag } : {};
      if (sg && sg.partitions.length > 1) for (const p of sg.partitions) out[`partition ${p.partition}`] = p.lag;
      return out;
    });
    chart.update(xs, Object.keys(lags).sort().map((label) => ({ label, values: lags[label] })));
    fill(parts, table(["partition", "committed", "next offset", "lag", "pending"],
      g.partitions.map((p) => h("tr", { dataset: { partition: String(p.partition) } },
        h("td", { class: "num" }, p.partition), h("td", { class: "num" }, fmtNumber(p.committed)),
        h("td", { class: "num" }, fmtNumber(p.next_offset)), h("td", { class: "num lag" }, fmtNumber(p.lag)),
        h("td", { class: "num" }, fmtNumber(p.pending)))), { class: "partitions" }));
    loadDeadLetters();
  }

  render();
  return { render, destroy: () => chart.destroy() };
}

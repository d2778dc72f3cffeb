// Publish and create: a test event on any topic, a new topic, a new consumer group.
//
// Everything goes through the public API as the page's fetches (same origin, a JSON
// body, the token of api.js), so the hub's cross-site rules and scopes apply as to
// any client. What the page can check itself (the data is JSON, a number is a
// number, the topic or group is not there already) it checks before sending; the
// rest (names, limits, scopes) is the hub's to refuse, and its problem detail is shown.
// "Create" never changes what exists: a PUT on an existing topic or group would
// reconfigure it, so the page looks first and refuses.

import { call, enc, get } from "./api.js";
import { errorBox, fill, fmtJson, h } from "./dom.js";

function field(label, input, hint = null) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), input,
    hint ? h("span", { class: "hint" }, hint) : null);
}

function ok(...children) {
  return h("div", { class: "ok-box", role: "status" }, ...children);
}

/** A form's submit: shows "working", then what fn answers, or its error; never twice at once. */
function submitter(form, out, fn) {
  let busy = false;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (busy) return;
    busy = true;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    fill(out, h("span", { class: "muted" }, "sending…"));
    try {
      fill(out, await fn());
    } catch (err) {
      fill(out, errorBox(err));
    } finally {
      busy = false;
      button.disabled = false;
    }
  });
}

/** A mistake found before anything is sent. */
class Invalid extends Error {}

export function mount(root, params, { sampler, go }) {
  const topicList = h("datalist", { id: "publish-topics" });

  // -- publish a test event ---------------------------------------------------------
  const pubTopic = h("input", { id: "publish-topic", list: "publish-topics", required: true, value: params.get("topic") || "", placeholder: "orders" });
  const pubType = h("input", { id: "publish-type", required: true, placeholder: "order.placed", value: params.get("type") || "" });
  const pubSource = h("input", { id: "publish-source", value: "/dashboard", placeholder: "/dashboard" });
  const pubKey = h("input", { id: "publish-key", placeholder: "optional: o-1001" });
  const pubCorrelation = h("input", { id: "publish-correlation", placeholder: "optional: o-1001" });
  const pubData = h("textarea", { id: "publish-data", rows: 6, spellcheck: "false" }, '{\n  "test": true\n}');
  const pubOut = h("div", { id: "publish-result", "aria-live": "polite" });
  const pubForm = h("form", { id: "publish-form", class: "form", autocomplete: "off" },
    h("h2", {}, "Publish a test event"),
    h("div", { class: "fields" },
      field("topic", pubTopic),
      field("type", pubType),
      field("source", pubSource),
      field("partition key", pubKey, "events with one key keep their order"),
      field("correlation id", pubCorrelation)),
    field("data (JSON)", pubData),
    h("div", { class: "controls" }, h("button", { type: "submit", id: "publish-send" }, "Publish")),
    pubOut);
  submitter(pubForm, pubOut, async () => {
    const topic = pubTopic.value.trim();
    const type = pubType.value.trim();
    if (!topic || !type) throw new Invalid("A topic and a type are needed.");
    let data;
    const text = pubData.value.trim();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (err) {
        throw new Invalid(`The data is not JSON, nothing was published: ${err.message}`);
      }
    }
    const event = { type, source: pubSource.value.trim() || "/dashboard" };
    if (pubKey.value.trim()) event.partitionkey = pubKey.value.trim();
    if (pubCorrelation.value.trim()) event.correlationid = pubCorrelation.value.trim();
    if (data !== undefined) {
      event.datacontenttype = "application/json";
      event.data = data;
    }
    const answer = await call("POST", `/v1/topics/${enc(topic)}/events`, event, "application/cloudevents+json");
    const [pos] = answer.events;
    sampler.sample();
    return ok(
      h("span", { id: "publish-position", dataset: { partition: String(pos.partition), offset: String(pos.offset) } },
        pos.duplicate ? "Already published (a duplicate id): " : "Published: ",
        h("code", {}, `${topic} ${pos.partition}:${pos.offset}`), " id ", h("code", {}, pos.id)), " · ",
      h("a", { href: "#", onclick: (e) => { e.preventDefault(); go("tail", { topic, from: "earliest" }); } }, "see it in the live tail"));
  });

  // -- create a topic ---------------------------------------------------------------
  const topicName = h("input", { id: "topic-name", required: true, placeholder: "orders" });
  const topicParts = h("input", { id: "topic-partitions", type: "number", min: 1, step: 1, value: 1, required: true });
  const topicOut = h("div", { id: "topic-result", "aria-live": "polite" });
  const topicForm = h("form", { id: "topic-form", class: "form", autocomplete: "off" },
    h("h2", {}, "Create a topic"),
    h("div", { class: "fields" },
      field("name", topicName, "letters, digits, . _ -"),
      field("partitions", topicParts)),
    h("div", { class: "controls" }, h("button", { type: "submit", id: "topic-create" }, "Create topic")),
    topicOut);
  submitter(topicForm, topicOut, async () => {
    const name = topicName.value.trim();
    const partitions = Number(topicParts.value);
    if (!name) throw new Invalid("A name is needed.");
    if (!Number.isInteger(partitions) || partitions < 1) {
      throw new Invalid(`partitions must be a whole number from 1, not "${topicParts.value}".`);
    }
    const { topics } = await get("/v1/topics");
    const there = topics.find((t) => t.name === name);
    if (there) {
      throw new Invalid(`Topic ${name} exists already, with ${there.partitions.length} partition(s): nothing changed.`);
    }
    const made = await call("PUT", `/v1/topics/${enc(name)}`, { partitions });
    sampler.sample();
    return ok(h("span", { id: "topic-made", dataset: { topic: made.name } },
      `Created topic ${made.name} with ${made.partitions.length} partition(s).`));
  });

  // -- create a consumer group ------------------------------------------------------
  const groupTopic = h("input", { id: "group-topic", list: "publish-topics", required: true, placeholder: "orders" });
  const groupName = h("input", { id: "group-name", required: true, placeholder: "payments" });
  const groupStart = h("select", { id: "group-start" },
    h("option", { value: "earliest" }, "earliest: every event kept"),
    h("option", { value: "latest" }, "latest: from now on"));
  const groupOrdering = h("select", { id: "group-ordering" },
    h("option", { value: "none" }, "none"),
    h("option", { value: "key" }, "key: one at a time per partition key"));
  const groupMax = h("input", { id: "group-max-deliver", type: "number", min: 1, step: 1, value: 5, required: true });
  const groupAckWait = h("input", { id: "group-ack-wait", type: "number", min: 0.001, step: "any", value: 30, required: true });
  const groupTypes = h("input", { id: "group-types", placeholder: "all; or order.*, payment.>" });
  const groupDlq = h("input", { id: "group-dlq", placeholder: "default: {topic}.dlq" });
  const groupOut = h("div", { id: "group-create-result", "aria-live": "polite" });
  const groupForm = h("form", { id: "group-form", class: "form", autocomplete: "off" },
    h("h2", {}, "Create a consumer group"),
    h("div", { class: "fields" },
      field("topic", groupTopic),
      field("name", groupName),
      field("start", groupStart),
      field("ordering", groupOrdering),
      field("max deliveries", groupMax, "then dead-lettered"),
      field("ack wait (s)", groupAckWait),
      field("types", groupTypes),
      field("dead-letter topic", groupDlq)),
    h("div", { class: "controls" }, h("button", { type: "submit", id: "group-create" }, "Create group")),
    groupOut);
  submitter(groupForm, groupOut, async () => {
    const topic = groupTopic.value.trim();
    const name = groupName.value.trim();
    if (!topic || !name) throw new Invalid("A topic and a name are needed.");
    const maxDeliver = Number(groupMax.value);
    if (!Number.isInteger(maxDeliver) || maxDeliver < 1) {
      throw new Invalid(`max deliveries must be a whole number from 1, not "${groupMax.value}".`);
    }
    const ackWait = Number(groupAckWait.value);
    if (!(ackWait > 0)) throw new Invalid(`ack wait must be a number of seconds above 0, not "${groupAckWait.value}".`);
    const config = {
      start: groupStart.value,
      ordering: groupOrdering.value,
      max_deliver: maxDeliver,
      ack_wait: ackWait,
      types: groupTypes.value.split(",").map((t) => t.trim()).filter(Boolean),
    };
    if (groupDlq.value.trim()) config.dead_letter_topic = groupDlq.value.trim();
    const { groups } = await get("/v1/groups");
    if (groups.some((g) => g.topic === topic && g.name === name)) {
      throw new Invalid(`Group ${name} on ${topic} exists already: nothing changed.`);
    }
    const made = await call("PUT", `/v1/topics/${enc(topic)}/groups/${enc(name)}`, config);
    sampler.sample();
    return ok(h("span", { id: "group-made", dataset: { topic, group: made.name } }, `Created group ${made.name} on ${topic}: `),
      h("a", { href: "#", onclick: (e) => { e.preventDefault(); go("groups", { topic, group: made.name }); } }, "open it"),
      h("pre", { class: "data" }, fmtJson(made.config)));
  });

  fill(root, h("h1", {}, "Publish & create"),
    h("p", { class: "muted" }, "Everything here goes through the hub's HTTP API with this page's token, like any client."),
    topicList, h("div", { class: "forms" }, pubForm, h("div", {}, topicForm, groupForm)));

  function topicsChanged() {
    const cur = sampler.last;
    if (cur) fill(topicList, cur.topics.map((t) => h("option", { value: t.name })));
  }
  const off = sampler.on(topicsChanged);
  topicsChanged();
  return { unmount: off };
}

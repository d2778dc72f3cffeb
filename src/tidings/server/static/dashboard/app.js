// The dashboard: one page, a view per #/route, all of it over the public API.
//
//   #/overview                      topics, events/s, the hub's health
//   #/tail?topic=orders&types=...   a live tail over the WebSocket
//   #/groups?topic=orders&group=g   consumer groups: lag, dead letters, seek, re-drive
//   #/webhooks?id=wh_...            endpoints, attempts, enable, replay, test
//   #/trace?id=o-1                  the events of one correlationid, as a timeline
//   #/trace?q=...                   the search box: a correlationid, or an event id
//   #/flow                          services → event types → services and webhooks, a graph
//   #/catalog?type=order.placed     event types: schema versions and diffs, producers, consumers
//   #/views?view=stock              views of stream processors: lag per input, keys
//   #/publish                       publish a test event; create a topic or a group
//
// ?poll=MS in the page's own query sets how often the hub is sampled (default 2000).

import { getToken, setToken } from "./api.js";
import * as catalog from "./catalog.js";
import { fill, fmtClock } from "./dom.js";
import * as flow from "./flow.js";
import * as groups from "./groups.js";
import * as overview from "./overview.js";
import * as publish from "./publish.js";
import { isAuthError, Sampler } from "./sampler.js";
import * as tail from "./tail.js";
import * as trace from "./trace.js";
import * as views from "./views.js";
import * as webhooks from "./webhooks.js";

const VIEWS = { overview, tail, groups, webhooks, trace, flow, catalog, views, publish };

const poll = Number(new URLSearchParams(location.search).get("poll")) || 2000;
const sampler = new Sampler(Math.max(200, poll));
const root = document.getElementById("view");
let current = null; // {name, params, view}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, query = ""] = hash.split("?");
  return { name: VIEWS[name] ? name : "overview", params: new URLSearchParams(query) };
}

/** Go to a view: go("groups", {topic, group}). */
export function go(name, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== ""));
  const hash = `#/${name}${q.toString() ? "?" + q : ""}`;
  if (location.hash === hash) show();
  else location.hash = hash;
}

function show() {
  const { name, params } = route();
  if (current && current.name === name && current.view.update) {
    current.view.update(params);
    return;
  }
  if (current && current.view.unmount) current.view.unmount();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === name);
  }
  fill(root);
  root.dataset.view = name;
  const view = VIEWS[name].mount(root, params, { sampler, go });
  current = { name, view };
}

function showStatus() {
  const status = document.getElementById("status");
  const notice = document.getElementById("notice");
  const err = sampler.error;
  if (err) {
    status.textContent = "not connected";
    status.className = "status bad";
    notice.hidden = false;
    fill(
      notice,
      isAuthError(err)
        ? `This hub needs a token (${err.status}: ${err.message}). Enter one above.`
        : `Cannot reach the hub: ${err.message || err}`,
    );
    return;
  }
  notice.hidden = true;
  const last = sampler.last;
  status.className = "status ok";
  status.textContent = last ? `live · sampled ${fmtClock(last.t)}` : "live";
  if (sampler.metricsError && isAuthError(sampler.metricsError)) {
    status.textContent += " · health needs an admin token";
  }
}

const form = document.getElementById("token-form");
const input = document.getElementById("token");
input.value = getToken();
form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken(input.value.trim());
  sampler.samples = [];
  sampler.sample();
  if (current) {
    if (current.view.unmount) current.view.unmount();
    current = null;
  }
  show();
});

// The search box: an event id or a correlationid, found by the Trace view.
document.getElementById("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = document.getElementById("search").value.trim();
  if (q) go("trace", { q });
});

sampler.on(showStatus);
window.addEventListener("hashchange", show);
sampler.start();
show();
// For tests and the curious: the state of the page.
window.tidingsDashboard = { sampler, go };

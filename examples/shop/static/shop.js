// The shop's page: products, cart and orders, all of it events.
//
// Storefront events (a product viewed or liked, the cart changed, a promo code
// applied) are published straight to the hub over its WebSocket with the browser
// client /static/tidings.js; the counts beside each product are a live view of
// those topics. An order is placed with the orders API (POST /orders, 202), and its
// journey is followed live: each event of the order's topics whose order_id is ours
// moves its status on.

const config = await (await fetch("/config")).json();
const { Tidings } = await import(`${config.hub}/static/tidings.js`);
const hub = new Tidings(config.hub);

const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text; // never innerHTML: data is user input
  if (cls) e.className = cls;
  return e;
};

const customer = localStorage.getItem("shop.customer") ||
  `customer-${Math.floor(Math.random() * 1e6)}`;
localStorage.setItem("shop.customer", customer);
$("customer").textContent = customer;
$("hub").textContent = config.hub;

// -- products and their live counts ---------------------------------------------------

const products = await (await fetch("/products")).json();
const stats = new Map(); // sku -> {views, likes, carts}; a Map: skus come from anyone
const statLines = new Map();
for (const p of products) {
  stats.set(p.sku, { views: 0, likes: 0, carts: 0 });
  const li = el("li");
  li.dataset.sku = p.sku;
  const left = el("div");
  left.append(el("strong", p.name), el("div", `${p.price.toFixed(2)} €`));
  statLines.set(p.sku, el("div", "", "stats"));
  left.append(statLines.get(p.sku));
  const like = el("button", "♥ Like", "quiet");
  like.onclick = () => storefront("likes", "product.liked", { sku: p.sku });
  const add = el("button", "Add to cart");
  add.dataset.action = "add";
  add.onclick = () => addToCart(p);
  li.append(left, like, add);
  li.onmouseenter = () => viewed(p.sku);
  $("products").append(li);
}

function showStats(sku) {
  const s = stats.get(sku);
  statLines.get(sku).textContent = `${s.views} views · ${s.likes} likes · ${s.carts} added to carts`;
}
products.forEach((p) => showStats(p.sku));

const seenViews = new Set();
function viewed(sku) {
  if (seenViews.has(sku)) return; // one view per product per page
  seenViews.add(sku);
  storefront("catalog", "product.viewed", { sku });
}

function storefront(topic, type, data) {
  hub.publish(topic, { type, data: { customer, ...data }, partitionkey: customer })
    .catch((err) => console.warn("publish failed", err));
}

const counts = { "product.viewed": "views", "product.liked": "likes" };
for (const topic of ["catalog", "likes", "cart"]) {
  hub.subscribe(topic, {
    from: "earliest",
    onEvent({ event }) {
      const s = stats.get(event.data && event.data.sku);
      if (!s) return;
      if (Object.hasOwn(counts, event.type)) s[counts[event.type]] += 1;
      if (event.type === "cart.item_added") s.carts += 1;
      if (event.type === "cart.item_removed") s.carts -= 1;
      const sku = event.data.sku;
      showStats(sku);
    },
  });
}

// -- the cart --------------------------------------------------------------------------

const cart = new Map(); // sku -> qty
function addToCart(p) {
  cart.set(p.sku, (cart.get(p.sku) || 0) + 1);
  storefront("cart", "cart.item_added", { sku: p.sku, qty: 1 });
  drawCart();
}
function removeFromCart(sku) {
  const qty = cart.get(sku) || 0;
  if (qty <= 1) cart.delete(sku); else cart.set(sku, qty - 1);
  storefront("cart", "cart.item_removed", { sku, qty: 1 });
  drawCart();
}
function drawCart() {
  $("cart").replaceChildren();
  for (const [sku, qty] of cart) {
    const li = el("li");
    const minus = el("button", "−", "quiet");
    minus.onclick = () => removeFromCart(sku);
    li.append(el("span", `${qty} × ${products.find((p) => p.sku === sku).name}`), minus);
    $("cart").append(li);
  }
  $("empty-cart").hidden = cart.size > 0;
  $("place").disabled = cart.size === 0;
}
drawCart();

// -- orders, followed live ---------------------------------------------------------------

const STEPS = {
  "order.placed": "placed",
  "inventory.reserved": "stock reserved",
  "inventory.rejected": "out of stock",
  "payment.succeeded": "paid",
  "payment.failed": "payment failed",
  "inventory.released": "reservation released",
  "shipment.created": "shipped",
  "customer.notified": "notified",
};
const mine = new Map(); // order id -> {li, status, steps}

$("place").onclick = async () => {
  const promo = $("promo").value.trim();
  const body = {
    customer,
    items: [...cart].map(([sku, qty]) => ({ sku, qty })),
    promo_code: promo || null,
  };
  if (promo) storefront("promos", "promo.applied", { code: promo });
  $("place").disabled = true;
  const resp = await fetch("/orders", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await resp.json();
  if (resp.status !== 202) {
    $("placed-error").hidden = false;
    $("placed-error").textContent = (answer.errors || []).map((e) => e.message).join("; ") ||
      answer.detail;
    $("place").disabled = false;
    return;
  }
  $("placed-error").hidden = true;
  cart.clear();
  drawCart();
  track(answer.order_id);
};

// Events may come back before POST /orders has answered: keep the latest few.
const early = [];

function track(orderId) {
  const li = el("li");
  li.dataset.order = orderId;
  li.dataset.status = "accepted";
  const status = el("span", "accepted", "status");
  li.append(el("div", orderId), status, el("p", "", "steps"));
  $("orders").prepend(li);
  mine.set(orderId, { li, status, steps: [] });
  for (const event of early.filter((e) => e.data.order_id === orderId)) step(event);
}

function step(event) {
  const order = mine.get(event.data.order_id);
  order.steps.push(STEPS[event.type]);
  order.li.querySelector(".steps").textContent = order.steps.join(" → ");
  if (event.type === "customer.notified") {
    order.status.textContent = `${event.data.status}: ${event.data.message}`;
    order.li.dataset.status = event.data.status;
  }
}

for (const topic of ["orders", "inventory", "payments", "shipments", "notifications"]) {
  hub.subscribe(topic, {
    from: "latest",
    onEvent({ event }) {
      if (!event.data || !Object.hasOwn(STEPS, event.type)) return;
      if (mine.has(event.data.order_id)) {
        step(event);
      } else {
        early.push(event);
        if (early.length > 200) early.shift();
      }
    },
    onError(err) { $("connection").textContent = `lost: ${err.detail}`; },
  });
}
$("connection").textContent = "live";

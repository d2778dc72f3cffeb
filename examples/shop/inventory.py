"""Inventory: reserves stock for a placed order, and releases it when payment fails.

``tidings run examples.shop.inventory:app``

The stock is not kept only in this process: it is the ``stock`` view, the fold
:func:`examples.shop.folds.stock` of the ledger on the topic ``stock`` (one event
per product of an order: reserved, released, refused), starting from the
catalog's stock. The hub keeps the view (its changelog and checkpoints), so a
restarted inventory knows the stock at once.
A second view, ``reservations``, folds the same ledger per order: what each order
holds, so that an order delivered twice (after a crash) gets the decision it got
the first time.

The process decides from its own copy of both views (:class:`Book`), so a decision
waits for no view:

- The copy is filled from the views. The first read of each view after a start (or
  after the copy is dropped) is made with ``min_position="latest"``: it reflects every
  ledger event appended before it, those of a process killed before this one
  included. Later, a key the copy lacks is read as the view has it: the view is at
  least that far, and this process has not written that key since (it writes only
  keys in its copy). An order placed after that first read of ``reservations`` began
  is not read at all: no other process can have written a hold for it.
- The copy follows this process's own ledger events, through the same folds as the
  views. Decisions are made one at a time (``Book.lock``), each on a copy that counts
  every earlier decision's reservations and refusals from the moment they are handed
  to the ledger, and a release's stock only once the release is durable: the copy's
  level is never above the ledger's, so nothing is oversold. A decision does not wait
  for the one before it to be durable, so decisions made while a ledger write is out
  go together in the next one (the consumer's outbox sends one request at a time, in
  order). A decision is answered once its own ledger events are durable, and a
  decision about an order waits for that order's writes in flight.
- The copy is dropped, and filled again from the views once every write in flight is
  answered, when a ledger write fails (it may or may not be in the ledger; decisions
  made meanwhile counted its reservations, so one of them may have been refused for
  stock that was not taken after all, never the other way), when the ledger shows an
  event this process did not write (:func:`watch`), and when it holds more than
  ``MAX_HOLDS`` orders.
- Each reservation is a ledger event of its own, checked against the level just read:
  a crash between two of an order's reservations leaves a partial hold, which the
  redelivered order completes (if the stock is still there) or gives back. A
  refusal is written before anything is given back, so a redelivered order that
  finds one is rejected again, never reserved.

One inventory process decides at a time: run one. A second one's ledger events
are seen only once written (by :func:`watch`); decisions made before that, on a
copy that lacks them, could oversell.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from examples.shop.catalog import PRODUCTS
from examples.shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderPlaced,
    PaymentFailed,
    StockRefused,
    StockReleased,
    StockReserved,
)
from examples.shop.folds import (
    STOCK_TOPIC,
    initial_stock,
    no_hold,
    order_of,
    reservation,
    sku_of,
    stock,
)
from examples.shop.settings import HUB
from tidings import App, Context, Event
from tidings.streams import EventView

Move = StockReserved | StockReleased | StockRefused

logger = logging.getLogger("shop.inventory")

app = App("inventory", hub=HUB)
app.view("stock", topics=[STOCK_TOPIC], key=sku_of)(stock)
app.view("reservations", topics=[STOCK_TOPIC], key=order_of)(reservation)

# Past this many orders in the copy, it is dropped and filled again from the views.
MAX_HOLDS = 100_000


class Book:
    """This process's copy of the ``stock`` and ``reservations`` views, which it
    decides from. Read and changed under ``lock`` (aside from :meth:`prefetch`, and
    a release's stock added back once it is durable)."""

    def __init__(self, run: object) -> None:
        self.run = run  # the app's run it belongs to
        self.lock = asyncio.Lock()
        self.levels: dict[str, int] = {}
        self.holds: dict[str, dict[str, Any]] = {}
        self.caught_up: set[str] = set()  # views read with min_position="latest" since a drop
        # The end of each partition of ``orders`` just before ``reservations`` was first read
        # since a drop: an order appended at or past it holds nothing this copy lacks.
        self.fresh_from: dict[int, int] = {}
        self.generation = 0  # how many times the copy was dropped
        self.stale = False  # drop it before the next decision
        self.mine: set[str] = set()  # ids of ledger events written here, not yet watched
        self.inflight: set[asyncio.Future[None]] = set()  # ledger writes not yet answered
        self.pending: dict[str, asyncio.Future[None]] = {}  # order id -> its writes in flight

    async def refresh(self, order_id: str) -> None:
        """Before a decision about ``order_id`` (under the lock): wait for that order's
        ledger writes in flight, and drop the copy if it may be wrong or is too big,
        once every write in flight is answered (the next reads fill it again from the
        views, which then reflect them)."""
        mine = self.pending.get(order_id)
        if mine is not None:
            await asyncio.wait([mine])
        if self.stale or len(self.holds) > MAX_HOLDS:
            if self.inflight:
                await asyncio.wait(list(self.inflight))
            self.levels.clear()
            self.holds.clear()
            self.caught_up.clear()
            self.fresh_from = {}
            self.generation += 1
            self.stale = False

    async def _read(self, view: str, key: str) -> dict[str, Any] | None:
        if view in self.caught_up:
            return await app.view_get(view, key)
        if view == "reservations":
            self.fresh_from = await app.end_positions("orders")
        got = await app.view_get(view, key, min_position="latest")
        self.caught_up.add(view)
        return got

    async def level(self, sku: str) -> int:
        if sku not in self.levels:
            got = await self._read("stock", sku)
            self.levels[sku] = initial_stock(sku) if got is None else int(got["value"])
        return self.levels[sku]

    async def prefetch(
        self, order_id: str, partition: int, offset: int, deliveries: int = 1
    ) -> tuple[int, dict[str, Any] | None] | None:
        """An order's entry in the ``reservations`` view, read before taking the lock
        (so the read waits beside other decisions), with the generation it was read in;
        None if it cannot be read yet without the lock (the view was not caught up).

        An order placed (at ``partition``, ``offset`` of ``orders``) after the copy began
        to be filled has no entry there that the copy lacks, and is not read: a hold for
        it could only be written after it was placed, by this process (then it is in the
        copy) or by another one running at the same time, which one inventory process
        rules out (the one before it was gone before this one started). A redelivery
        is read all the same: two processes may overlap in a rolling restart, and one
        that died after its hold was written leaves the order to the other."""
        if order_id in self.holds or "reservations" not in self.caught_up:
            return None
        generation = self.generation
        if deliveries == 1 and offset >= self.fresh_from.get(partition, offset + 1):
            return generation, None
        return generation, await app.view_get("reservations", order_id)

    async def hold(
        self, order_id: str, early: tuple[int, dict[str, Any] | None] | None = None
    ) -> dict[str, Any]:
        """What the order holds. ``early`` (from :meth:`prefetch`) stands if the copy
        was not dropped since it was read: the order had no entry in the copy then nor
        now, so this process wrote nothing for it in between."""
        if order_id not in self.holds:
            if early is not None and early[0] == self.generation:
                got = early[1]
            else:
                got = await self._read("reservations", order_id)
            self.holds[order_id] = no_hold() if got is None else got["value"]
        return self.holds[order_id]

    async def check(self, moves: list[Move]) -> None:
        """Read what the copy lacks of the keys ``moves`` write (it must hold them)."""
        for move in moves:
            await self.level(move.sku)
            await self.hold(move.order_id)

    def write(self, ctx: Context, moves: list[Move]) -> asyncio.Future[None]:
        """Hand ``moves`` to the ledger (one request, in order, with what other decisions
        hand in meanwhile) and apply them to the copy; the future is done once they
        are durable. Reservations and refusals count at once, so the next decision
        sees them; a release adds its stock back only once durable, so the copy's
        level is never above the ledger's. If the write fails, it may be in the ledger
        or not: the copy is dropped. Each event's id says what it is
        (``o-1.tea.reserved``): published again after a crash, the hub's dedupe drops it.
        Call :meth:`check` first (under the same lock, with no await in between)."""
        seen = []
        for move in moves:
            eid = f"{move.order_id}.{move.sku}.{move.event_type.split('.')[1]}"
            event = {"id": eid, "type": move.event_type, "data": move.model_dump(mode="json")}
            view = EventView(event)
            seen.append(view)
            self.holds[move.order_id] = reservation(self.holds[move.order_id], view)
            if move.event_type != StockReleased.event_type:
                self.levels[move.sku] = stock(self.levels[move.sku], view)
            self.mine.add(eid)
        written = asyncio.ensure_future(self._publish(ctx, seen, self.generation))
        self.inflight.add(written)
        written.add_done_callback(self.inflight.discard)
        for move in moves:
            self.pending[move.order_id] = written
        return written

    async def _publish(self, ctx: Context, seen: list[EventView], generation: int) -> None:
        try:
            # submitted together, in order: one request of the consumer's outbox
            await asyncio.gather(*(
                ctx.publish(STOCK_TOPIC, e.type, e.data, key=e.data["sku"], id=e.id)
                for e in seen
            ))  # fmt: skip
        except BaseException:
            self.stale = True
            raise
        finally:
            for e in seen:
                if self.pending.get(e.data["order_id"]) is asyncio.current_task():
                    del self.pending[e.data["order_id"]]
        if generation == self.generation:  # else the views reflect them
            for e in seen:
                if e.type == StockReleased.event_type and e.data["sku"] in self.levels:
                    self.levels[e.data["sku"]] = stock(self.levels[e.data["sku"]], e)


# One book per run of the app (and per event loop: tests run several loops).
_books: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Book] = weakref.WeakKeyDictionary()


def _book() -> Book:
    loop = asyncio.get_running_loop()
    book = _books.get(loop)
    if book is None or book.run is not app.consumers:  # a list made anew at each start
        book = _books[loop] = Book(app.consumers)
    return book


def _wanted(order: OrderPlaced) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in order.items:  # the same product twice in an order is one reservation
        wanted[item.sku] = wanted.get(item.sku, 0) + item.qty
    return wanted


@app.on("orders", ordering="key", concurrency=8)
async def reserve(order: OrderPlaced, ctx: Context) -> InventoryReserved | InventoryRejected:
    oid = order.order_id
    wanted = _wanted(order)
    book = _book()
    early = await book.prefetch(oid, ctx.partition, ctx.offset, ctx.deliveries)
    async with book.lock:
        await book.refresh(oid)
        hold, *at = await asyncio.gather(
            book.hold(oid, early), *(book.level(sku) for sku in wanted)
        )  # fmt: skip
        decision, moves = _decide(order, wanted, hold, dict(zip(wanted, at, strict=True)))
        await book.check(moves)
        written = book.write(ctx, moves) if moves else None
    if written is not None:
        await written
    return decision


def _decide(
    order: OrderPlaced, wanted: dict[str, int], hold: dict[str, Any], levels: dict[str, int]
) -> tuple[InventoryReserved | InventoryRejected, list[Move]]:
    """The answer to ``order`` and the ledger events that make it so."""
    oid = order.order_id
    if hold["refused"]:  # decided before a crash: rejected
        return _rejected(order, hold["refused"]), _give_back(oid, hold)
    if hold["released"]:  # decided before a crash: reserved, and since released
        return InventoryReserved(**order.model_dump()), []
    missing = {sku: qty for sku, qty in wanted.items() if sku not in hold["held"]}
    short = sorted(sku for sku, qty in missing.items() if levels[sku] < qty)
    if not short:
        return InventoryReserved(**order.model_dump()), [
            StockReserved(order_id=oid, sku=sku, qty=qty, total=_total(sku, qty))
            for sku, qty in missing.items()
        ]  # fmt: skip
    # Short: the refusal first (the decision, should a crash follow), then give back
    # what a crashed attempt may have held.
    refusals: list[Move] = [
        StockRefused(order_id=oid, sku=sku, qty=missing[sku], available=levels[sku])
        for sku in short
    ]
    return _rejected(order, short), refusals + _give_back(oid, hold)


def _total(sku: str, qty: int) -> float:
    return round(PRODUCTS[sku].price * qty, 2) if sku in PRODUCTS else 0.0


def _give_back(order_id: str, hold: dict[str, Any]) -> list[Move]:
    return [StockReleased(order_id=order_id, sku=sku, qty=qty) for sku, qty in hold["held"].items()]


def _rejected(order: OrderPlaced, short: list[str]) -> InventoryRejected:
    return InventoryRejected(
        order_id=order.order_id,
        customer=order.customer,
        reason="out of stock: " + ", ".join(short),
    )


@app.on("payments", ordering="key", concurrency=8)
async def release(failed: PaymentFailed, ctx: Context) -> InventoryReleased:
    oid = failed.order_id
    book = _book()
    async with book.lock:
        await book.refresh(oid)
        hold = await book.hold(oid)
        if not hold["held"] and not hold["released"]:
            logger.warning("payment failed for %s, which holds no stock", oid)
        moves = _give_back(oid, hold)
        await book.check(moves)
        written = book.write(ctx, moves) if moves else None
    if written is not None:
        await written
    return InventoryReleased(
        order_id=oid,
        customer=failed.customer,
        reason=f"payment failed: {failed.reason}",
    )


@app.on(STOCK_TOPIC, start="latest")
async def watch(event: Event) -> None:
    """Each ledger event: one this process did not write (another process's, or a
    killed one's that landed late) means the copy may lack it: it is dropped."""
    book = _book()
    if event.id in book.mine:
        book.mine.discard(event.id)
        return
    if book.holds or book.levels:
        logger.info("ledger event %s was not written here: reading the views again", event.id)
    book.stale = True

"""The shop: an order's journey through services that know only events.

A customer places an order; the orders API answers 202 at once after publishing
``order.placed``, and the order moves on through services that each consume
some events and emit others::

    orders API     POST /orders                 -> order.placed        (orders)
    inventory      order.placed                 -> inventory.reserved | inventory.rejected
                   payment.failed               -> inventory.released  (inventory)
                          and its ledger:          stock.reserved | stock.refused
                                                   | stock.released     (stock)
    payments       inventory.reserved           -> payment.succeeded | payment.failed  (payments)
    shipping       payment.succeeded            -> shipment.created    (shipments)
    notifications  shipment.created, inventory.rejected, inventory.released
                                                -> customer.notified   (notifications)

An order ends ``confirmed`` (shipped) or ``cancelled`` (out of stock, or its
payment failed and its reservation was released). The state is views folded
from these events alone (see :mod:`examples.shop.folds`): inventory decides from
the ``stock`` view of its ledger, and the orders API answers each order from the
``orders`` view. The hub sends ``customer.notified`` to the partner's webhook;
the browser page follows it over the WebSocket.

Every module is written with tidings' public API only, as a user would.
"""

"""What the shop's processes read from their environment."""

from __future__ import annotations

import os

HUB = os.environ.get("TIDINGS_URL", "http://127.0.0.1:8700")
# The share of payments declined, and of payment attempts that raise once (a
# provider's timeout) and succeed when retried: chosen per order, repeatably.
PAYMENT_DECLINE_RATE = float(os.environ.get("SHOP_PAYMENT_DECLINE_RATE", "0.1"))
PAYMENT_ERROR_RATE = float(os.environ.get("SHOP_PAYMENT_ERROR_RATE", "0.1"))

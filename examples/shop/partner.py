"""The partner: a shop's business partner that receives ``customer.notified`` by webhook.

It checks every request's Standard Webhooks signature with the secret the hub
gave when the webhook was registered (``SHOP_PARTNER_SECRET``), refuses what
does not verify (401), and drops repeats by ``webhook-id``. Run it with
``uvicorn examples.shop.partner:app --port 8720``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidings import webhooks

logger = logging.getLogger("shop.partner")


def create_app(secret: str | None = None) -> Starlette:
    received: dict[str, dict[str, Any]] = {}  # webhook-id -> the event's data
    refused = 0

    async def hook(request: Request) -> Response:
        nonlocal refused
        key = secret or os.environ.get("SHOP_PARTNER_SECRET", "")
        body = await request.body()
        try:
            event = webhooks.verify(key, request.headers, body)
        except webhooks.WebhookVerificationError as exc:
            refused += 1
            logger.warning("refused a request: %s", exc)
            return JSONResponse({"detail": str(exc)}, 401)
        msg_id = request.headers["webhook-id"]
        if msg_id not in received:
            received[msg_id] = event.get("data") or {}
            logger.info("%s: %s", event.get("type"), received[msg_id])
        return Response(status_code=204)

    async def listing(request: Request) -> Response:
        return JSONResponse({"received": list(received.values()), "refused": refused})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/tidings", hook, methods=["POST"]),
            Route("/received", listing, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


app = create_app()

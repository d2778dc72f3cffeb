"""The ticket book of ``POST /v1/ws/ticket`` and the log redaction, without a hub.

Expiry is tested with a clock the test moves; the hub-facing behaviour (issue,
use once, refuse ``?token=``) is in test_ws.py and test_sse.py.
"""

from __future__ import annotations

import logging

import pytest

from tidings.errors import RateLimited, Unauthorized
from tidings.server.auth import Token
from tidings.server.redact import RedactSecrets, redact
from tidings.server.tickets import Tickets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_ticket_stands_for_its_token_once_and_only_until_it_expires() -> None:
    clock = Clock()
    book = Tickets(ttl_s=30, clock=clock)
    ops = Token("ops", "s3cret", admin=True)
    first, second = book.issue(ops), book.issue(None)
    assert first != second and first.startswith("tkt_")
    assert book.redeem(first) is ops
    with pytest.raises(Unauthorized):
        book.redeem(first)
    clock.now += 30
    with pytest.raises(Unauthorized):
        book.redeem(second)
    assert len(book) == 0


def test_unredeemed_tickets_are_bounded_and_expire() -> None:
    clock = Clock()
    book = Tickets(ttl_s=30, limit=3, clock=clock)
    for _ in range(3):
        book.issue(None)
    with pytest.raises(RateLimited):
        book.issue(None)
    clock.now += 30.5
    book.issue(None)  # the expired ones are dropped first
    assert len(book) == 1


def test_redaction_keeps_everything_but_the_secret() -> None:
    assert redact('"WebSocket /v1/ws?token=s3cret&x=1" 403') == (
        '"WebSocket /v1/ws?token=[redacted]&x=1" 403'
    )
    assert redact("/v1/topics/t/sse?from=earliest&ticket=tkt_abc") == (
        "/v1/topics/t/sse?from=earliest&ticket=[redacted]"
    )
    assert redact("/v1/ws?tokens=a&from=0:1") == "/v1/ws?tokens=a&from=0:1"
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" %d',
        ("127.0.0.1:5", "/v1/ws?token=s3cret", 403), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert "s3cret" not in record.getMessage()

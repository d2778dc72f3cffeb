"""Signatures, checked against the standardwebhooks package; URLs and address classes."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tidings import webhooks
from tidings.core.webhooks.signing import new_secret, secret_key, signature_header
from tidings.core.webhooks.targets import AddressPolicy, address_class, check_url, parse_networks
from tidings.errors import BadRequest, UrlNotAllowed


def signed(secrets: list[str], body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    keys = [secret_key(s) for s in secrets]
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(keys, "msg_1", ts, body),
    }


def test_our_signature_verifies_with_standardwebhooks() -> None:
    secret = new_secret()
    body = b'{"type":"order.placed","id":"1"}'
    headers = signed([secret], body)
    assert Webhook(secret).verify(body, headers) == {"type": "order.placed", "id": "1"}
    assert webhooks.verify(secret, headers, body)["type"] == "order.placed"


def test_both_secrets_verify_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"a":1}'
    headers = signed([new, old], body)
    assert len(headers["webhook-signature"].split()) == 2
    for s in (old, new):
        Webhook(s).verify(body, headers)
        webhooks.verify(s, headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_verify_refuses_what_it_must() -> None:
    secret = new_secret()
    body = b'{"a":1}'
    good = signed([secret], body)
    with pytest.raises(webhooks.WebhookVerificationError, match="signature"):
        webhooks.verify(new_secret(), good, body)
    with pytest.raises(webhooks.WebhookVerificationError, match="signature"):
        webhooks.verify(secret, good, b'{"a":2}')
    with pytest.raises(webhooks.WebhookVerificationError, match="too old"):
        webhooks.verify(secret, signed([secret], body, ts=int(time.time()) - 301), body)
    with pytest.raises(webhooks.WebhookVerificationError, match="too new"):
        webhooks.verify(secret, signed([secret], body, ts=int(time.time()) + 301), body)
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in good.items() if k != missing}
        with pytest.raises(webhooks.WebhookVerificationError, match=missing):
            webhooks.verify(secret, partial, body)
    with pytest.raises(webhooks.WebhookVerificationError, match="whsec_"):
        webhooks.verify("nope", good, body)
    # header names in any case, body as str
    upper = {k.upper(): v for k, v in good.items()}
    assert webhooks.verify(secret, upper, body.decode()) == {"a": 1}
    # the tolerance is the caller's
    old = signed([secret], body, ts=int(time.time()) - 1000)
    assert webhooks.verify(secret, old, body, tolerance=2000) == {"a": 1}


def test_secret_format() -> None:
    s = new_secret()
    assert s.startswith("whsec_") and len(secret_key(s)) == 24
    for bad in ("abc", "whsec_***", "whsec_" + "QUJD"):
        with pytest.raises(ValueError):
            secret_key(bad)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT (shared address space)"),
        ("100.127.255.254", "CGNAT (shared address space)"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"), ("198.18.0.1", "reserved"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback"),
        ("2002:0a00:0001::1", "private"),  # 6to4 around 10.0.0.1
        ("fec0::1", "site-local"), ("192.0.0.8", "reserved"),
    ],
)  # fmt: skip
def test_address_classes_are_refused(address: str, kind: str) -> None:
    import ipaddress

    assert address_class(ipaddress.ip_address(address)) == kind
    policy = AddressPolicy()
    assert policy.refusal(address) is not None
    with pytest.raises(UrlNotAllowed) as err:
        policy.check_addresses("example.test", [address])
    assert err.value.fields["field"] == "url"


def test_public_addresses_pass_and_allow_lists_open_networks() -> None:
    policy = AddressPolicy()
    assert policy.refusal("93.184.216.34") is None
    assert policy.refusal("2606:2800:220:1::1") is None
    allowing = AddressPolicy(parse_networks(["127.0.0.0/8", "10.0.0.0/8"]))
    assert allowing.refusal("127.0.0.1") is None
    assert allowing.refusal("::ffff:10.9.9.9") is None
    assert allowing.refusal("192.168.1.1") is not None
    # one bad address among good ones refuses the name (DNS rebinding)
    with pytest.raises(UrlNotAllowed):
        policy.check_addresses("mixed.test", ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(UrlNotAllowed):
        policy.check_addresses("none.test", [])
    with pytest.raises(BadRequest):
        parse_networks(["not-a-net"])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x", "file:///etc/passwd", "gopher://example.com", "/relative",
        "http://", "http://user:pw@example.com/", "https://example.com/#frag",
        "http://example.com:99999/", "", 42, "x" * 3000,
    ],
)  # fmt: skip
def test_url_shapes_that_are_refused(url: object) -> None:
    with pytest.raises(UrlNotAllowed):
        check_url(url)


def test_url_shapes_that_pass() -> None:
    t = check_url("https://Hooks.Example.com/in?x=1")
    assert (t.scheme, t.host, t.port) == ("https", "hooks.example.com", 443)
    assert check_url("http://[::1]:8080/").port == 8080

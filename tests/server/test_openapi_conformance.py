"""The OpenAPI document against the server that serves it.

schemathesis reads ``/openapi.json`` from a real hub and sends every operation
requests made from the document: valid ones (with the path naming resources that
exist, and with generated paths) and invalid ones. Each answer must be no 5xx, a
documented status with a documented content type and a body of the documented
schema; a valid request must not be refused as malformed (400, 413, 415, 422) and an
invalid one must be refused. The examples are bounded and derandomized, so a run
repeats exactly.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hubproc import HubFactory, HubProcess, free_port
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup

from tidings.server import openapi

ADMIN = "conformance-admin"
READER = "conformance-reader"  # may subscribe to the seeded topic only: the 403s
TOPIC, GROUP = "orders", "workers"
EVENT_ID, CORRELATION_ID = "conformance-event-1", "o-1"  # what the event lookups find
VIEW, VIEW_KEY = "orders-view", "k"  # a view over TOPIC with one key
EXAMPLES = 80  # per operation
REQUEST_TIMEOUT_S = 10.0
SSE_TIMEOUT_S = 1.0  # an event stream is read this long, then cut

# A valid request may still be refused for what the hub holds, not for its shape:
# these fields, named by the problem, are judged against the topic, group or webhook.
STATE_DEPENDENT = {
    # offsets and partitions that exist; from and from_time together
    "read": {"partition", "from", "from_time"},
    "sse": {"from", "Last-Event-ID"},  # partitions and offsets that exist
    "seek": {"from", "to", "to.partition", "to.offset", "partition"},  # likewise
    "replayWebhook": {"topic", "since"},  # a topic the webhook follows; partitions that exist
    # an input of the view; partitions that exist
    "getViewKey": {"min_position", "topic"},
    "viewKeys": {"min_position", "topic"},
    # the checkpoint's generation, judged against the view's; a partition it has
    "commitView": {"events", "partition"},
    "viewSse": {"from", "Last-Event-ID"},  # partitions the view's changelog has
    # a window view's result topics ({view}, {view}.late) against its name's length and
    # its inputs; a hopping window's every against its size
    # (and a layout's tasks, at most MAX_TASKS, against the inputs' partition counts)
    "putView": {"view", "inputs", "window.every", "repartition"},
    "rebuildView": {"repartition", "inputs"},
}
# A JSON Schema document its meta-schema allows may still not compile: a pattern that
# is no regular expression, a $ref that resolves to nothing. No schema can say so.
STATE_DEPENDENT.update(
    {op: {"schema"} for op in ("putSchema", "checkSchema", "putSchemaConsumer")}
)
REFUSALS = {400, 413, 415, 422}


def accepts_valid_requests(operation_id: str, response: Any, case: Any) -> None:
    """A request the document allows is not refused as malformed, unless the hub judged a
    field against what it holds (STATE_DEPENDENT)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if response.status_code not in REFUSALS:
        return
    field = response.json().get("field") if response.status_code == 400 else None
    if field in STATE_DEPENDENT.get(operation_id, ()):
        return
    raise AssertionError(f"Schema-valid request refused with {response.status_code}")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

OPERATIONS = sorted(
    op["operationId"]
    for item in openapi.spec()["paths"].values()
    for name, op in item.items()
    if name != "parameters"
)
# Operations that would remove the seeded resources get generated paths only.
DESTRUCTIVE = {"deleteTopic", "deleteGroup", "deleteWebhook"}
# Generated leases are stale, and a generated commit all but never ends where the
# view's changelog does: 409.
NO_SUCCESS_EXPECTED = DESTRUCTIVE | {"ack", "nack", "commitView"}


@pytest.fixture(scope="module")
def conformance_hub(
    module_hub_factory: HubFactory, tmp_path_factory: pytest.TempPathFactory
) -> HubProcess:
    auth = tmp_path_factory.mktemp("conformance") / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "admin", "token": ADMIN, "admin": True},
                    {"name": "reader", "token": READER, "subscribe": [TOPIC]},
                ]
            }
        )
    )
    # Webhooks may reach loopback only, and their URL is a port where nothing listens.
    return module_hub_factory.start(
        "--auth-file", str(auth),
        "--webhook-allow-net", "127.0.0.1/32",
        "--webhook-retry-schedule", "0",
    )  # fmt: skip


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"


@pytest.fixture(scope="module")
def seeded(
    conformance_hub: HubProcess, session: requests.Session, dead_url: str
) -> Callable[[], dict[str, str]]:
    """Makes the topic, group and webhook that fixed paths name exist again; their names."""
    base, auth = conformance_hub.base_url, {"authorization": f"Bearer {ADMIN}"}
    webhook: dict[str, str] = {}

    def seed() -> dict[str, str]:
        r = session.put(f"{base}/v1/topics/{TOPIC}", json={"partitions": 2}, headers=auth)
        if r.status_code == 201:
            event = {
                "type": "order.placed", "source": "/shop", "data": {"n": 1},
                "id": EVENT_ID, "correlationid": CORRELATION_ID,
            }  # fmt: skip
            r = session.post(
                f"{base}/v1/topics/{TOPIC}/events",
                data=json.dumps(event),
                headers={**auth, "content-type": "application/cloudevents+json"},
            )
            assert r.status_code == 202, r.text
        r = session.get(f"{base}/v1/topics/{TOPIC}/groups/{GROUP}", headers=auth)
        if r.status_code == 404:
            r = session.put(f"{base}/v1/topics/{TOPIC}/groups/{GROUP}", json={}, headers=auth)
            assert r.status_code == 201, r.text
        if (
            not webhook
            or session.get(f"{base}/v1/webhooks/{webhook['id']}", headers=auth).status_code == 404
        ):
            body = {"url": dead_url, "topics": [TOPIC]}
            r = session.post(f"{base}/v1/webhooks", json=body, headers=auth)
            assert r.status_code == 201, r.text
            webhook["id"] = r.json()["id"]
        # A registered schema (the same one again is the same version) for the schema paths.
        r = session.put(
            f"{base}/v1/schemas/order.placed", json={"schema": {"type": "object"}}, headers=auth
        )
        assert r.status_code in (200, 201, 409), r.text
        _seed_view(session, f"{base}/v1/views/{VIEW}", auth)
        return {"topic": TOPIC, "group": GROUP, "id": webhook["id"], "type": "order.placed",
                "version": "1", "event_id": EVENT_ID, "view": VIEW, "key": VIEW_KEY}

    return seed


def _seed_view(session: requests.Session, url: str, auth: dict[str, str]) -> None:
    """The view over TOPIC with VIEW_KEY, caught up with every event of TOPIC (so that a
    min_position waits for nothing): made again if a rebuild emptied it, laid out
    again as one task if a declaration of the operations made it partitioned or
    repartitioned."""
    r = session.put(url, json={"kind": "view", "inputs": [TOPIC]}, headers=auth)
    if r.status_code == 409 and r.json().get("field") in ("partitioned", "repartition"):
        rebuilt = session.post(f"{url}/rebuild", json={"partitioned": False}, headers=auth)
        assert rebuilt.status_code == 200, rebuilt.text
        r = session.put(url, json={"kind": "view", "inputs": [TOPIC]}, headers=auth)
    assert r.status_code in (200, 201), r.text
    info = r.json()
    base = url.split("/v1/")[0]
    topic = session.get(f"{base}/v1/topics/{TOPIC}", headers=auth).json()
    ends = {str(p["partition"]): p["next_offset"] for p in topic["partitions"]}
    if info["keys"] and info["lag"] == {TOPIC: 0}:
        return
    gen, end = info["generation"], info["changelog"]["next_offset"]
    events = [
        {"type": "tidings.view.value", "partitionkey": f"v:{VIEW_KEY}", "data": {"value": 1}},
        {"type": "tidings.view.checkpoint", "partitionkey": "c",
         "data": {"generation": gen, "seq": 0, "inputs": {TOPIC: ends}}},
    ]  # fmt: skip
    body = {"generation": gen, "expect": end, "events": events}
    r = session.post(f"{url}/commit", json=body, headers=auth)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def schema(conformance_hub: HubProcess) -> Any:
    return schemathesis.openapi.from_url(
        f"{conformance_hub.base_url}/openapi.json", config=schemathesis.Config()
    )


def test_the_served_document_is_valid_openapi(conformance_hub: HubProcess) -> None:
    from openapi_spec_validator import validate

    document = requests.get(f"{conformance_hub.base_url}/openapi.json", timeout=10).json()
    validate(document)
    assert document == json.loads(json.dumps(openapi.spec()))


def _tame(case: Any, dead_url: str) -> None:
    """Keep a request off the network and short: webhook URLs go to a dead loopback port,
    long polls do not wait (the document allows up to a minute).

    Only values the document allows are changed: an invalid one (a negative case)
    stays as generated, or the case would no longer be the invalid request it is.
    """
    if isinstance(case.body, dict):
        url = case.body.get("url")
        if isinstance(url, str) and len(url) <= 2048 and _HTTP_URL.match(url):
            case.body["url"] = dead_url
        if "wait" in case.body and _valid_wait(case.body["wait"]):
            case.body["wait"] = 0
    if case.query and "wait" in case.query and _valid_wait(case.query["wait"]):
        case.query["wait"] = "0"


_HTTP_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://[^@#]+$")
_WAIT_TEXT = re.compile(r"^(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?(ms|s|m|h|d)?$")


def _valid_wait(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return 0 <= value <= 3153600000
    return isinstance(value, str) and _WAIT_TEXT.match(value) is not None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_operation_conforms_to_the_document(
    operation_id: str,
    schema: Any,
    conformance_hub: HubProcess,
    session: requests.Session,
    seeded: Callable[[], dict[str, str]],
    dead_url: str,
) -> None:
    operation = schema.find_operation_by_id(operation_id)
    fixed = seeded()
    params = {p.name for p in operation.path_parameters}
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    if params and operation_id not in DESTRUCTIVE:
        on_seeded = {k: v for k, v in fixed.items() if k in params}
        strategies += [
            operation.as_strategy(generation_mode=mode, path_parameters=on_seeded)
            for mode in (GenerationMode.POSITIVE, GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    tokens = st.sampled_from([ADMIN, ADMIN, ADMIN, READER, None])
    failures: dict[str, str] = {}
    seen: dict[int, int] = {}
    timeout = SSE_TIMEOUT_S if operation_id in ("sse", "viewSse") else REQUEST_TIMEOUT_S

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), token=tokens)
    def run(case: Any, token: str | None) -> None:
        _tame(case, dead_url)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = case.call(
            base_url=conformance_hub.base_url, session=session, headers=headers, timeout=timeout
        )
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                first = (failure.message.splitlines() or [""])[0]
                key = f"{failure.title} ({response.status_code}): {first}"
                failures.setdefault(key, _describe(case, response))
        try:
            accepts_valid_requests(operation_id, response, case)
        except AssertionError as exc:
            failures.setdefault(f"{exc} ({response.status_code})", _describe(case, response))

    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    assert not failures, f"{operation_id}: {len(failures)} mismatches\n" + "\n".join(
        f"- {k}\n{v}" for k, v in failures.items()
    )
    assert elapsed < 60, f"{operation_id} took {elapsed:.1f}s"
    # The valid requests got through somewhere, so the answers checked include successes.
    if operation_id not in NO_SUCCESS_EXPECTED:
        assert any(200 <= s < 300 for s in seen), f"{operation_id} never succeeded: {seen}"


def _describe(case: Any, response: Any) -> str:
    body = response.content[:300].decode(errors="replace")
    return (
        f"    {case.method} {case.formatted_path} query={case.query} headers={case.headers} "
        f"media_type={case.media_type} body={str(case.body)[:300]}\n"
        f"    generated as: {str(getattr(case, 'meta', None))[:300]}\n"
        f"    -> {response.status_code} "
        f"{response.headers.get('content-type')}: {body}"
    )

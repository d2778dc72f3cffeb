"""Webhooks on the hub: endpoints registered, followed, signed, sent and logged.

:class:`WebhookService` holds the endpoints and runs an
:class:`~tidings.server.webhooks.dispatch.EndpointDispatcher` for each. It
signs per Standard Webhooks (:mod:`tidings.core.webhooks.signing`), posts
through a :class:`~tidings.server.webhooks.sender.Sender` (the seam tests can
replace), and writes every attempt to the store's log in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import uuid_utils

from tidings.core.groups import Delivery, GroupConfig
from tidings.core.hub import Hub
from tidings.core.positions import is_token, parse_time_ms
from tidings.core.webhooks.config import Endpoint, WebhookPolicy, parse_config, parse_grace_ms
from tidings.core.webhooks.schedule import (
    Decision,
    EndpointHealth,
    Outcome,
    State,
    classify,
    parse_retry_after,
)
from tidings.core.webhooks.signing import signature_header
from tidings.core.webhooks.store import (
    Attempt,
    EndpointOwners,
    Trigger,
    WebhookDeadLetter,
    WebhookMoved,
    WebhookStore,
)
from tidings.core.webhooks.targets import AddressPolicy
from tidings.errors import (
    BadPosition,
    BadRequest,
    NotFound,
    StorageUnavailable,
    TopicNotFound,
    WebhookNotFound,
)
from tidings.server.webhooks.dispatch import EndpointDispatcher
from tidings.server.webhooks.sender import AiohttpSender, Sender, SendResult
from tidings.server.webhooks.sharing import SharedEndpoints

logger = logging.getLogger("tidings.webhooks")

FLUSH_S = 0.2
PRUNE_S = 600.0
NEVER_DEAD = 1 << 31  # the group never dead-letters: the schedule decides


class WebhookService:
    def __init__(
        self,
        hub: Hub,
        store: WebhookStore,
        policy: WebhookPolicy | None = None,
        sender: Sender | None = None,
        rng: random.Random | None = None,
        owners: EndpointOwners | None = None,
    ) -> None:
        self.hub = hub
        self.store = store
        #: Which node dispatches each endpoint, when several share the store (NATS);
        #: None: this one dispatches them all.
        self.owners = owners
        self.sharing: SharedEndpoints | None = None
        self.policy = policy or WebhookPolicy()
        self.sender = sender or AiohttpSender(
            AddressPolicy(self.policy.allow_nets), self.policy.max_response_bytes
        )
        self.rng = rng or random.Random()
        self.endpoints: dict[str, Endpoint] = {}
        self.dispatchers: dict[str, EndpointDispatcher] = {}
        self._log: list[Attempt] = []
        self._flusher: asyncio.Task[None] | None = None
        self._changing = asyncio.Lock()
        # For /metrics: attempts per (endpoint, outcome), dead letters per endpoint.
        self.attempt_counts: dict[tuple[str, str], int] = {}
        self.dead_counts: dict[str, int] = {}

    def _health(self) -> EndpointHealth:
        p = self.policy
        return EndpointHealth(
            schedule=p.schedule,
            disable_after_ms=p.disable_after_ms,
            probe_max_ms=p.probe_max_ms,
            probe_delay_ms=min(1_000, p.probe_max_ms),
            rng=self.rng,
        )

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        for row in await self.store.load_endpoints():
            ep = Endpoint.from_row(row, self._health())
            self.endpoints[ep.id] = ep
            for topic in ep.config.topics:
                if topic in self.hub.topics:  # a deleted topic's pump waits for its return
                    await self.follow(ep, topic)
            if self.owners is None:
                await self._run(ep, resume=True)
        if self.owners is None:
            # A registration cut short by a crash leaves groups that no endpoint owns.
            # (Not where nodes share endpoints: one may be registered on another now.)
            owned = {ep.group for ep in self.endpoints.values()}
            for t in list(self.hub.topics.values()):
                for name in list(t.groups):
                    if name.startswith("webhook.wh_") and name not in owned:
                        await self.hub.delete_group(t.name, name)
        else:  # each endpoint is dispatched by the node that takes its lease
            self.sharing = SharedEndpoints(self, self.owners)
            await self.sharing.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every())

    async def close(self) -> None:
        if self.sharing is not None:
            await self.sharing.stop()
        await asyncio.gather(*(d.stop() for d in self.dispatchers.values()))
        self.dispatchers.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
        if self.owners is not None:  # once the groups are saved: others take over at once
            with contextlib.suppress(Exception):
                await self.owners.close()
        await self.sender.close()
        await self.store.close()

    async def _run(self, ep: Endpoint, resume: bool = False) -> None:
        if self.owners is not None and not self.owners.holds(ep.id):
            return  # another node's to dispatch (or nobody's until one claims it)
        d = EndpointDispatcher(self, ep)
        if resume:
            since = self.hub.clock.time_ms() - sum(self.policy.schedule.delays_ms) - 86_400_000
            d.resume(await self.store.retry_state(ep.id, since))
        self.dispatchers[ep.id] = d
        d.start()

    async def _restart(self, ep: Endpoint) -> None:
        old = self.dispatchers.pop(ep.id, None)
        if old is not None:
            await old.stop()
        await self._run(ep)
        d = self.dispatchers.get(ep.id)
        if old is not None and d is not None:  # the records waiting for a retry keep
            d.attempts.update(old.attempts)  # their counts

    async def follow(
        self, ep: Endpoint, topic: str, start: Literal["earliest", "latest"] = "latest"
    ) -> None:
        """Make sure the endpoint's group on ``topic`` exists (by default from the end)."""
        if topic in self.hub.topics and ep.group in self.hub.topics[topic].groups:
            return
        await self.hub.put_group(topic, ep.group, self._group_config(ep, start))

    def _group_config(
        self, ep: Endpoint, start: Literal["earliest", "latest"] = "latest"
    ) -> GroupConfig:
        return GroupConfig(
            start=start,
            ack_wait_ms=round(self.policy.timeout_s * 1000) + 30_000,
            max_deliver=NEVER_DEAD,
            ordering=ep.config.ordering,
            types=ep.config.types,
        )

    async def _flush_every(self) -> None:
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
                if time.monotonic() - last_prune > PRUNE_S:
                    last_prune = time.monotonic()
                    await self.store.prune_attempts(
                        self.hub.clock.time_ms() - self.policy.attempts_max_age_ms,
                        self.policy.attempts_kept,
                    )
            except Exception:
                logger.exception("could not write the webhook attempts log")

    async def flush(self) -> None:
        log, self._log = self._log, []
        if log:
            await self.store.add_attempts(log)

    async def save(self, ep: Endpoint) -> None:
        await self.store.save_endpoint(ep.to_row())

    # -- the API -------------------------------------------------------------------------

    def get(self, id: str) -> Endpoint:
        ep = self.endpoints.get(id)
        if ep is None:
            raise WebhookNotFound(f"webhook {id!r} does not exist", webhook=id)
        return ep

    def list(self) -> list[dict[str, Any]]:
        return [ep.view() for ep in sorted(self.endpoints.values(), key=lambda e: e.id)]

    async def show(self, id: str) -> dict[str, Any]:
        """:meth:`view`, from the node that dispatches the endpoint (its lag, in flight)."""
        try:
            forwarded, answer = await self._forward("view", id, {})
        except StorageUnavailable:  # its holder died: this node's copy, until one takes it
            forwarded = False
        return answer if forwarded else self.view(id)

    def view(self, id: str) -> dict[str, Any]:
        ep = self.get(id)
        out = ep.view()
        lag: dict[str, int] = {}
        for topic in ep.config.topics:
            with contextlib.suppress(NotFound):
                lag[topic] = self.hub.group_info(topic, ep.group)["lag"]
        d = self.dispatchers.get(ep.id)
        out["lag"] = lag
        out["in_flight"] = d.in_flight if d else 0
        out["retrying"] = len(d.attempts) if d else 0
        return out

    # Changes of endpoints take turns: each awaits (a DNS lookup, a dispatcher
    # stopping), and two at once could leave two dispatchers on one endpoint or bring
    # a deleted one back.

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        async with self._changing:
            return await self._create(body)

    # Where nodes share endpoints, a call on an endpoint that another node dispatches
    # runs there (forwarded), so that one node changes its dispatcher and groups.

    # If nobody holds it, this node takes it (as its claim loop would) before running
    # the call; a call forwarded to a node that no longer holds it is refused as moved.

    async def _forward(self, op: str, id: str, body: Mapping[str, Any]) -> tuple[bool, Any]:
        if self.owners is None or (id in self.dispatchers and self.owners.holds(id)):
            return False, None
        self.get(id)
        for _ in range(3):  # the holder may change under a call: ask again
            try:
                forwarded, answer = await self.owners.forward(id, op, dict(body))
            except WebhookMoved:
                continue
            if forwarded:
                return True, answer
            await self._take(id)
            return False, None
        raise StorageUnavailable(
            f"the node dispatching webhook {id!r} changed during the call: try again"
        )

    async def _take(self, id: str) -> None:
        """Make this node the endpoint's holder and dispatcher, or raise 503."""
        assert self.owners is not None and self.sharing is not None
        if not await self.owners.claim(id):
            raise StorageUnavailable(
                f"another node is taking webhook {id!r} over: try again"
            )
        await self.sharing.take_over(id)
        self.get(id)  # deleted meanwhile: 404
        if not self.owners.holds(id):
            raise StorageUnavailable(f"webhook {id!r} moved to another node: try again")

    def _check_held(self, id: str, forwarded: bool = False) -> None:
        """Refuse a call on an endpoint this node does not hold (on NATS): moved, for a
        forwarded one (its sender asks again); else a 503 to try again."""
        if self.owners is None or self.owners.holds(id):
            return
        self.get(id)
        detail = f"webhook {id!r} is not dispatched by this node now: try again"
        raise WebhookMoved(detail) if forwarded else StorageUnavailable(detail)

    async def patch(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        forwarded, answer = await self._forward("patch", id, body)
        if forwarded:
            return answer  # type: ignore[no-any-return]
        async with self._changing:
            self._check_held(id)
            return await self._patch(id, body)

    async def delete(self, id: str) -> None:
        forwarded, _ = await self._forward("delete", id, {})
        if forwarded:
            return
        async with self._changing:
            self._check_held(id)
            await self._delete(id)

    async def replay(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        forwarded, answer = await self._forward("replay", id, body)
        if forwarded:
            return answer  # type: ignore[no-any-return]
        async with self._changing:
            self._check_held(id)
            return await self._replay(id, body)

    async def run_here(self, op: str, id: str, body: dict[str, Any]) -> Any:
        """A call another node forwarded here (see :meth:`_forward`), run on this node:
        refused as moved (:class:`WebhookMoved`) unless this node holds the endpoint."""
        self._check_held(id, forwarded=True)
        if id not in self.dispatchers and self.sharing is not None:
            await self.sharing.take_over(id)  # claimed, its dispatcher not started yet
        if op == "patch":
            async with self._changing:
                self._check_held(id, forwarded=True)
                return await self._patch(id, body)
        if op == "delete":
            async with self._changing:
                self._check_held(id, forwarded=True)
                await self._delete(id)
            return None
        if op == "replay":
            async with self._changing:
                self._check_held(id, forwarded=True)
                return await self._replay(id, body)
        if op == "view":
            return self.view(id)
        if op == "rotate":
            return await self._rotate(id, body)
        if op == "attempts":
            return await self._attempts(id, body["status"], body["limit"], body["before"])
        if op == "test":
            return await self._test(id)
        if op == "replay_dead_letters":
            return await self._replay_dead_letters(id, body)
        raise BadRequest(f"unknown webhook call {op!r}")

    async def _create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        config = parse_config(body, max_type_patterns=self.hub.options.max_type_patterns)
        await self.sender.check(config.url)
        ep = Endpoint.new(config, self._health(), self.hub.clock.time_ms())
        for topic in config.topics:
            await self.follow(ep, topic)
        self.endpoints[ep.id] = ep
        await self.save(ep)
        if self.owners is None or await self.owners.claim(ep.id):
            await self._run(ep)
        return {**ep.view(), "secret": ep.secrets[0].value}

    async def _patch(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ep = self.get(id)
        config = parse_config(body, ep.config, self.hub.options.max_type_patterns)
        if config.url != ep.config.url:
            await self.sender.check(config.url)
        old = ep.config
        was = ep.health.state
        dropped = [t for t in old.topics if t not in config.topics]
        ep.config = replace(config, enabled=old.enabled)
        if "enabled" in body:
            ep.set_enabled(config.enabled)
        for topic in config.topics:
            if topic in self.hub.topics and ep.group in self.hub.topics[topic].groups:
                await self.hub.put_group(topic, ep.group, self._group_config(ep))
            elif topic not in old.topics:
                await self.follow(ep, topic)  # a new topic: followed from its end
            # else: a followed topic that was deleted; its pump waits for it
        await self.save(ep)
        delivery = ("url", "topics", "types", "ordering", "concurrency", "rate_limit")
        if any(getattr(old, f) != getattr(ep.config, f) for f in delivery) or (
            ep.health.state is not was
        ):
            await self._restart(ep)
        for topic in dropped:
            with contextlib.suppress(NotFound):
                await self.hub.delete_group(topic, ep.group)
        return self.view(id)

    async def _delete(self, id: str) -> None:
        ep = self.get(id)
        del self.endpoints[id]
        d = self.dispatchers.pop(id, None)
        if d is not None:
            await d.stop(grace_s=0)
        for topic in ep.config.topics:
            with contextlib.suppress(NotFound):
                await self.hub.delete_group(topic, ep.group)
        await self.flush()
        await self.store.delete_endpoint(id)
        if self.owners is not None:
            await self.owners.release(id)

    async def rotate(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        forwarded, answer = await self._forward("rotate", id, body)
        return answer if forwarded else await self._rotate(id, body)

    async def _rotate(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ep = self.get(id)
        grace = parse_grace_ms(body)
        now = self.hub.clock.time_ms()
        secret = ep.rotate(now, grace)
        await self.save(ep)
        return {"id": id, "secret": secret, "previous_valid_until": now + grace}

    async def attempts(
        self, id: str, status: str | None, limit: int, before: int | None
    ) -> dict[str, Any]:
        """The attempts log, newest first (from the node that dispatches the endpoint:
        it holds the attempts not written yet)."""
        body = {"status": status, "limit": limit, "before": before}
        try:
            forwarded, answer = await self._forward("attempts", id, body)
        except StorageUnavailable:  # its holder died: the log as written so far
            forwarded = False
        if forwarded:
            return answer  # type: ignore[no-any-return]
        return await self._attempts(id, status, limit, before)

    async def _attempts(
        self, id: str, status: str | None, limit: int, before: int | None
    ) -> dict[str, Any]:
        self.get(id)
        if status not in (None, "succeeded", "failed", "success", "gone", "throttled"):
            raise BadRequest(
                "status must be succeeded, failed, success, gone, throttled", field="status"
            )
        await self.flush()
        rows = await self.store.attempts(id, status, limit, before)
        return {
            "attempts": [a.view() for a in rows],
            "next": rows[-1].id if len(rows) == limit else None,
        }

    async def _replay(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Deliver again everything since a time or a position: the groups seek back."""
        ep = self.get(id)
        unknown = sorted(set(body) - {"since", "topic"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
        if "since" not in body:
            raise BadRequest("since is required: a time, or a position token with topic",
                             field="since")
        since = body["since"]
        topic = body.get("topic")
        if topic is not None and topic not in ep.config.topics:
            raise BadRequest(f"the webhook does not follow topic {topic!r}", field="topic")
        topics = [topic] if topic is not None else list(ep.config.topics)
        if isinstance(since, str) and is_token(since) and topic is None and len(topics) > 1:
            raise BadPosition("a position token names offsets of one topic: give topic too",
                              field="since")
        if since in ("earliest", "latest"):
            raise BadPosition("since must be a time or a position token", field="since")
        target: object = since
        if not (isinstance(since, str) and is_token(since)):
            target = {"time": parse_time_ms(since, "since")}
        if topic is not None and topic not in self.hub.topics:
            raise TopicNotFound(f"topic {topic!r} does not exist", topic=topic)
        moved: dict[str, str] = {}
        for t in topics:
            if t not in self.hub.topics:
                continue  # deleted: nothing of it to deliver again
            await self.follow(ep, t)
            try:
                pos = await self.hub.seek(t, ep.group, target)
            except BadPosition as exc:  # the hub names its own parameter, from
                raise type(exc)(exc.detail, **{**exc.fields, "field": "since"}) from None
            moved[t] = ",".join(f"{p}:{o}" for p, o in sorted(pos.items()))
        d = self.dispatchers.get(id)
        if d is not None:
            d.attempts = {k: v for k, v in d.attempts.items() if k[0] not in topics}
            d.notify()
        return {"id": id, "topics": moved}

    async def dead_letters(self, id: str, limit: int, before: int | None) -> dict[str, Any]:
        self.get(id)
        rows = await self.store.dead_letters(id, limit, before)
        return {
            "dead_letters": [d.view() for d in rows],
            "next": rows[-1].id if len(rows) == limit else None,
        }

    async def replay_dead_letters(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        forwarded, answer = await self._forward("replay_dead_letters", id, body)
        if forwarded:
            return answer  # type: ignore[no-any-return]
        return await self._replay_dead_letters(id, body)

    async def _replay_dead_letters(self, id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.get(id)
        unknown = sorted(set(body) - {"ids"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
        ids = body.get("ids")
        if ids is not None and (
            not isinstance(ids, list)
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 63 for i in ids
            )
        ):
            raise BadRequest("ids must be a list of dead-letter ids", field="ids")
        n = await self.store.mark_replaying(id, ids)
        d = self.dispatchers.get(id)
        if d is not None:
            d.replay_dead_letters()
        return {"id": id, "replaying": n}

    async def test(self, id: str) -> dict[str, Any]:
        """One attempt of a ``tidings.webhook.test`` event, outside the log and its retries."""
        forwarded, answer = await self._forward("test", id, {})
        return answer if forwarded else await self._test(id)

    async def _test(self, id: str) -> dict[str, Any]:
        ep = self.get(id)
        now = datetime.now(UTC)
        msg_id = str(uuid_utils.uuid7())
        event = {
            "specversion": "1.0",
            "id": msg_id,
            "source": f"/webhooks/{id}",
            "type": "tidings.webhook.test",
            "time": now.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": {"webhook": id, "message": "a test event from tidings"},
        }
        body = orjson.dumps(event)
        _, outcome = await self._post(ep, body, msg_id, None, None, None, 1, "test")
        if outcome is Outcome.SUCCESS and ep.health.state is State.FAILING:
            ep.health.on_attempt(outcome, 1, self.hub.clock.time_ms())
            await self.save(ep)
            d = self.dispatchers.get(id)
            if d is not None:
                d.drain()
        await self.flush()
        # The newest attempt of this message: deliveries may have been logged since.
        recent = await self.store.attempts(id, None, 100, None)
        attempt = next(a for a in recent if a.msg_id == msg_id and a.trigger == "test")
        return {"id": id, "event": event, "attempt": attempt.view()}

    # -- delivery ------------------------------------------------------------------------

    async def attempt(
        self,
        ep: Endpoint,
        payload: bytes,
        topic: str,
        partition: int,
        offset: int,
        made: int,
        trigger: Trigger = "delivery",
        event: dict[str, Any] | None = None,
    ) -> tuple[Outcome, Decision]:
        """Send one record once, log it, and let the endpoint's health decide what next.
        ``event``: the payload as the group's fetch parsed it, if it did (its id is
        read there rather than from the payload parsed again)."""
        msg_id = _event_id(payload) if event is None else str(event.get("id", ""))
        result, outcome = await self._post(ep, payload, msg_id, topic, partition, offset, made,
                                           trigger)
        now = self.hub.clock.time_ms()
        retry_after = (
            parse_retry_after(result.retry_after, now) if outcome is Outcome.THROTTLED else None
        )
        decision = ep.health.on_attempt(outcome, made, now, retry_after)
        return outcome, decision

    async def _post(
        self,
        ep: Endpoint,
        body: bytes,
        msg_id: str,
        topic: str | None,
        partition: int | None,
        offset: int | None,
        made: int,
        trigger: Trigger,
    ) -> tuple[SendResult, Outcome]:
        now_ms = self.hub.clock.time_ms()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/cloudevents+json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                ep.signing_keys(now_ms), msg_id, timestamp, body
            ),
            "tidings-attempt": str(made),
        }
        if topic is not None:
            headers["tidings-topic"] = topic
            headers["tidings-partition"] = str(partition)
            headers["tidings-offset"] = str(offset)
        result = await self.sender.send(ep.config.url, body, headers, self.policy.timeout_s)
        outcome = classify(result.status)
        counted = (ep.id, outcome.value)
        self.attempt_counts[counted] = self.attempt_counts.get(counted, 0) + 1
        self._log.append(
            Attempt(
                ep.id, now_ms, msg_id, topic, partition, offset, made, outcome.value,
                result.status, result.latency_ms, result.error, result.response, trigger,
            )
        )
        return result, outcome

    async def dead_letter(
        self, ep: Endpoint, topic: str, d: Delivery, made: int, reason: str
    ) -> None:
        await self.store.add_dead_letter(
            WebhookDeadLetter(
                ep.id, self.hub.clock.time_ms(), topic, d.partition, d.offset,
                _event_id(d.payload), d.payload, made, reason,
            )
        )
        self.dead_counts[ep.id] = self.dead_counts.get(ep.id, 0) + 1
        logger.warning("webhook %s: %s/%d@%d dead-lettered: %s",
                       ep.id, topic, d.partition, d.offset, reason)


def _event_id(payload: bytes) -> str:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    return str(event.get("id", "")) if isinstance(event, dict) else ""

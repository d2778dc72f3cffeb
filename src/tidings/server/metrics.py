"""``/metrics`` in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tidings.core.hub import Hub
from tidings.log.partition import FSYNC_STATS
from tidings.server.webhooks import WebhookService


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _by_topic(values: Mapping[str, int]) -> list[tuple[str, float]]:
    return [(f'{{topic="{_label(t)}"}}', n) for t, n in sorted(values.items())]


def render_metrics(hub: Hub, webhooks: WebhookService | None = None) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    m = hub.metrics
    family(
        "tidings_events_in_total", "counter", "Events appended, per topic.", _by_topic(m.events_in)
    )
    family("tidings_bytes_in_total", "counter", "Bytes of events appended.", _by_topic(m.bytes_in))
    family(
        "tidings_events_out_total", "counter", "Events handed to readers and groups.",
        _by_topic(m.events_out),
    )
    family(
        "tidings_dead_letters_total", "counter", "Events moved to a dead-letter topic.",
        _by_topic(m.dead_letters),
    )
    topics = sorted(hub.topics.items())
    kept = {n: sum(p.end_offset - p.start_offset for p in t.partitions) for n, t in topics}
    size = {n: sum(p.size_bytes for p in t.partitions) for n, t in topics}
    family("tidings_topic_events", "gauge", "Events kept in a topic.", _by_topic(kept))
    family("tidings_topic_bytes", "gauge", "Bytes kept on disk for a topic.", _by_topic(size))
    lag: list[tuple[str, float]] = []
    pending: list[tuple[str, float]] = []
    for name, t in topics:
        for gname in sorted(t.groups):
            info = hub.group_info(name, gname)
            labels = f'{{topic="{_label(name)}",group="{_label(gname)}"}}'
            lag.append((labels, info["lag"]))
            pending.append((labels, info["pending"]))
    family("tidings_group_lag", "gauge", "Events a consumer group has not finished.", lag)
    family("tidings_group_pending", "gauge", "Events leased and not yet acknowledged.", pending)
    family(
        "tidings_fsync_seconds", "summary", "Time spent in fsync of the event log.",
        [("_count", FSYNC_STATS.count), ("_sum", FSYNC_STATS.seconds)],
    )
    if webhooks is not None:
        family(
            "tidings_webhook_attempts_total", "counter",
            "Webhook attempts, per endpoint and outcome (success, gone, throttled, failed).",
            [
                (f'{{webhook="{_label(w)}",outcome="{o}"}}', n)
                for (w, o), n in sorted(webhooks.attempt_counts.items())
            ],
        )
        family(
            "tidings_webhook_dead_letters_total", "counter",
            "Webhook deliveries dead-lettered after their last attempt, per endpoint.",
            [(f'{{webhook="{_label(w)}"}}', n) for w, n in sorted(webhooks.dead_counts.items())],
        )
    return "\n".join(lines) + "\n"

"""``/metrics`` in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable, Mapping

from tidings.core.hub import Hub, Topic
from tidings.log.config import FSYNC_STATS
from tidings.log.files import OpenFiles
from tidings.server.webhooks.service import WebhookService


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _by_topic(values: Mapping[str, int]) -> list[tuple[str, float]]:
    return [(f'{{topic="{_label(t)}"}}', n) for t, n in sorted(values.items())]


_START_TIME = time.time()


def _open_fds() -> list[tuple[str, float]]:
    """The process's open descriptors, from /proc (none where there is no /proc)."""
    try:
        return [("", len(os.listdir("/proc/self/fd")))]
    except OSError:
        return []


def resident_memory_bytes() -> int:
    """The process's resident set now: /proc on Linux, else the peak that getrusage knows."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def _damage_families(
    family: Callable[..., None], hub: Hub, topics: list[tuple[str, Topic]]
) -> None:
    """Events lost to damage on disk, and how many of them readers stepped over."""
    lost = {n: sum(d.records for p in t.partitions for d in p.damage) for n, t in topics}
    family(
        "tidings_damaged_events", "gauge",
        "Offsets of a topic lost to damage on disk (see GET /v1/topics/{topic}).",
        _by_topic(lost),
    )
    family(
        "tidings_skipped_events_total", "counter",
        "Offsets lost to damage that reads and consumer groups stepped over.",
        _by_topic(hub.metrics.skipped_events),
    )


def render_metrics(
    hub: Hub,
    webhooks: WebhookService | None = None,
    connections: Mapping[str, int] | None = None,
) -> str:
    """Every family; ``connections`` counts the open live connections per channel."""
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
    _damage_families(family, hub, topics)
    family(
        "tidings_storage_failed_partitions", "gauge",
        "Partitions refusing appends until they heal (a write failed: a full disk).",
        [("", len(hub.failed_partitions()))],
    )
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
    if connections is not None:
        family(
            "tidings_connections", "gauge", "Open live connections, per channel (websocket, sse).",
            [(f'{{channel="{_label(c)}"}}', n) for c, n in sorted(connections.items())],
        )
    # The names and meanings of the Prometheus client libraries' process collector.
    cpu = os.times()
    family(
        "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
        [("", resident_memory_bytes())],
    )
    family(
        "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.",
        [("", round(cpu.user + cpu.system, 3))],
    )
    family(
        "process_start_time_seconds", "gauge", "Start time of the process since the epoch.",
        [("", round(_START_TIME, 3))],
    )
    family("process_open_fds", "gauge", "Number of open file descriptors.", _open_fds())
    family(
        "process_max_fds", "gauge", "Maximum number of open file descriptors.",
        [("", resource.getrlimit(resource.RLIMIT_NOFILE)[0])],
    )
    files = getattr(hub.storage, "files", None)
    if isinstance(files, OpenFiles):
        family(
            "tidings_log_open_files", "gauge",
            "Segment and index files the log holds open (at most --max-open-files).",
            [("", files.open_count)],
        )
        family(
            "tidings_log_files_closed_total", "counter",
            "Log files closed to make room for others (reopened when next used).",
            [("", files.closes)],
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

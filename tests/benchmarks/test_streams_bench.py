"""The streams benchmark: its events, its reference, and a small run of every engine.

The small run (20,000 events) checks each engine's windows and late count
against the reference; it asserts nothing about speed.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings.benchmarks import streams
from tidings.benchmarks.streams_events import (
    Generated,
    Workload,
    compare,
    generate,
    parse_ms,
    reference,
    rfc3339_ms,
    windows_from_json,
)

SMALL = Workload(events=20_000, keys=100, step_ms=50)


def _digest(w: Workload) -> str:
    h = hashlib.sha256()
    for batch in generate(w):
        h.update(orjson.dumps(batch))
    return h.hexdigest()


def test_the_same_workload_gives_the_same_bytes_and_another_seed_others() -> None:
    assert _digest(SMALL) == _digest(SMALL)
    assert _digest(SMALL) != _digest(Workload(events=20_000, keys=100, step_ms=50, seed=17))


def test_the_mix_is_as_asked_and_the_reference_finds_exactly_the_late_ones() -> None:
    counts = Generated()
    batches = list(generate(SMALL, counts))
    events = [e for b in batches for e in b]
    assert len(events) == counts.events == 20_000
    assert all(len(b) == 1000 for b in batches)
    assert 300 <= counts.out_of_order <= 500  # 2%
    assert 8 <= counts.late <= 35  # 0.1%
    assert {e["partitionkey"] for e in events} == {SMALL.key(i) for i in range(100)}
    ref = reference(batches, SMALL.size_ms, SMALL.grace_ms)
    # Every event the generator made late is late, and no other.
    assert ref.late == counts.late
    assert sum(ref.counts.values()) == 20_000 - counts.late
    # The last event closes every window but its own.
    assert ref.watermark_ms == counts.last_ms == parse_ms(events[-1]["time"])
    assert list(ref.still_open()) == [(SMALL.key(0), ref.watermark_ms - ref.watermark_ms % 60_000)]


def _ev(key: str, ms: int) -> dict[str, Any]:
    return {"partitionkey": key, "time": rfc3339_ms(ms)}


def test_a_window_closes_at_its_end_plus_the_grace_and_later_events_for_it_are_late() -> None:
    base = 1_893_456_000_000
    events = [
        _ev("a", base + 1_000),
        _ev("b", base + 69_999),  # the watermark: 1 ms short of closing [0, 60 s)
        _ev("a", base + 59_999),  # in: the window is still open
        _ev("b", base + 70_000),  # closes [0, 60 s) (end 60 s + grace 10 s)
        _ev("a", base + 30_000),  # late
        _ev("b", base + 60_000),  # in the next window, still open
    ]
    ref = reference([events], 60_000, 10_000)
    assert ref.counts == {("a", base): 2, ("b", base + 60_000): 3}
    assert ref.late == 1
    assert ref.closed() == {("a", base): 2}
    assert ref.still_open() == {("b", base + 60_000): 3}


def test_times_parse_exactly_and_round_trip() -> None:
    for ms in (0, 1, 999, 1_893_456_000_123, 1_893_456_059_999):
        assert parse_ms(rfc3339_ms(ms)) == ms
    assert parse_ms("2030-01-01T01:00:00.5+01:00") == 1_893_456_000_500
    with pytest.raises(ValueError, match="no offset"):
        parse_ms("2030-01-01T00:00:00")


def test_compare_names_missing_extra_and_different_windows() -> None:
    want = {("a", 0): 2, ("b", 0): 1, ("c", 60_000): 4}
    assert compare(dict(want), want).equal
    got = {("a", 0): 3, ("c", 60_000): 4, ("d", 0): 1}
    verdict = compare(got, want)
    assert not verdict.equal
    assert "1 missing (e.g. ('b'" not in verdict.detail  # keys are shown as key@time
    assert "1 missing (e.g. b@1970-01-01T00:00:00.000Z = 1)" in verdict.detail
    assert "1 extra (e.g. d@1970-01-01T00:00:00.000Z = 1)" in verdict.detail
    assert "1 with other counts (+1 events in all; e.g. a@1970-01-01T00:00:00.000Z: 3 not 2)" in (
        verdict.detail
    )


def test_a_window_reported_twice_with_two_counts_is_refused() -> None:
    assert windows_from_json([["a", 0, 2], ["a", 0, 2]]) == {("a", 0): 2}
    with pytest.raises(ValueError, match="reported twice"):
        windows_from_json([["a", 0, 2], ["a", 0, 3]])


def test_a_small_run_of_every_engine_equals_the_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--events", "20000", "--keys", "100", "--settle", "0", "--json"]
    argv += ["--data-dir", str(tmp_path)]
    assert streams.main(argv) == 0
    result = orjson.loads(capsys.readouterr().out)
    assert result["generated"]["late"] == result["late"] > 0
    cases = {c["kind"] + ": " + c["name"]: c for c in result["cases"]}
    kinds = [c["kind"] for c in result["cases"]]
    assert kinds == ["ceiling", "anchor", "ours", "ours", "anchor"], cases
    for name, case in cases.items():
        assert "skipped" not in case, name
        assert case["equal"], (name, case["compared"])
        assert case["late_equal"], (name, case["late"], result["late"])
        assert case["events"] == 20_000, name
        assert case["cpu_seconds"] > 0 and case["cpu_us_per_event"] > 0, name
    ours = [c for c in result["cases"] if c["kind"] == "ours"]
    assert all(c["windows"] == result["closed_windows"] for c in ours)
    # over HTTP the hub's process counts too
    assert [list(c["other_cpu_seconds"]) for c in ours] == [[], ["hub process"]]
    assert result["anchor_cpu_us_per_event"] > 0
    assert result["closed_windows"] == result["windows"] - 1
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone


def test_a_childs_peak_memory_is_its_own_not_its_parents(tmp_path: Path) -> None:
    # ru_maxrss would report at least the 200 MB this process holds when it starts the
    # child (Linux carries it over exec); VmHWM starts anew.
    from tidings.benchmarks.processes import peak_rss_kib, run_process
    from tidings.benchmarks.streams_events import write_jsonl

    ballast = bytearray(200 << 20)
    ballast[:: 1 << 12] = b"x" * len(ballast[:: 1 << 12])  # touch every page
    assert peak_rss_kib() > 200 << 10
    write_jsonl(Workload(events=2000, keys=10, step_ms=500), tmp_path / "ev.jsonl")
    out = tmp_path / "ref.json"
    argv = [sys.executable, "-m", "tidings.benchmarks.streams_events", str(tmp_path / "ev.jsonl")]
    run_process("ref", [*argv, "--size-ms", "60000", "--grace-ms", "10000", str(out)], tmp_path, 60)
    assert orjson.loads(out.read_bytes())["peak_rss_kib"] < 150 << 10
    del ballast

"""A commit's records as the hub checks them (``check_commit``): the one pass over the
changes a processor sends accepts and refuses exactly what the full check of each
event does, names the same event and fault, and leaves the events given as they are."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tidings.app.processor import changelog_events
from tidings.core.viewrecords import CheckedCommit, _check_all, check_commit
from tidings.errors import TidingsError
from tidings.events.nesting import MAX_DEPTH
from tidings.streams import DELETED, Output

LIMIT = 1 << 20


def processor_commit(values: int = 3, state: int = 3) -> list[dict[str, Any]]:
    """A commit as the processor makes it: served values, state (one of each deleted),
    then the checkpoint."""
    served = {f"k{i}@2026-01-01T00:00:00.000Z": {"key": f"k{i}", "value": i} for i in range(values)}
    out = Output(
        values=served | {"gone": DELETED},
        state={f"w:0:k{i}": [i, 0] for i in range(state)} | {"w:0:old": DELETED},
        results=[],
        late=[],
        clock={"stream_time": 5, "watermark": 5},
    )
    checkpoint = {
        "generation": 0, "seq": 7, "owner": "app@host:1", "inputs": {"sales": {"0": 10}},
        "horizon": 5, "clock": out.clock,
    }  # fmt: skip
    return changelog_events("v", 0, 7, out, checkpoint)


def stored(checked: CheckedCommit) -> list[dict[str, Any]]:
    """The records as stored, without their ``time`` (the moment of the check)."""
    out = []
    for payload in checked.payloads:
        record = orjson.loads(payload)
        assert isinstance(record.pop("time"), str)
        out.append(record)
    return out


def outcome(check: Callable[[], CheckedCommit]) -> tuple[str, Any]:
    try:
        return "stored", stored(check())
    except TidingsError as exc:
        return type(exc).__name__, (exc.status, exc.detail, exc.fields)


def test_a_processors_commit_is_stored_as_the_full_check_stores_it() -> None:
    events = processor_commit()
    given = copy.deepcopy(events)
    checked = check_commit("v", 0, events, LIMIT)
    assert events == given  # the events given are left as they are
    assert stored(checked) == stored(_check_all("v", 0, events, LIMIT))
    assert [e["partitionkey"] for e in stored(checked)][-1] == "c"
    assert [orjson.loads(p)["time"] for p in checked.payloads] == [
        orjson.loads(checked.payloads[0])["time"]
    ] * len(events)  # one append, one time
    # checked where they lie: no copy of a change
    assert all(c is e for c, e in zip(checked.events[:-1], events[:-1], strict=True))


def deep(levels: int) -> Any:
    """A value nesting ``levels`` levels of lists and objects."""
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 2 else {"x": value}
    return value


def _with(n: int, **changes: Any) -> Callable[[list[dict[str, Any]]], None]:
    def mangle(events: list[dict[str, Any]]) -> None:
        for name, value in changes.items():
            if value is _DROP:
                events[n].pop(name, None)
            else:
                events[n][name] = value

    return mangle


_DROP = object()


Mangle = Callable[[list[dict[str, Any]]], None]


def _both(*mangles: Mangle) -> Mangle:
    def mangle(events: list[dict[str, Any]]) -> None:
        for m in mangles:
            m(events)

    return mangle


def _inputs(inputs: Any) -> Callable[[list[dict[str, Any]]], None]:
    def mangle(events: list[dict[str, Any]]) -> None:
        events[-1]["data"] = {**events[-1]["data"], "inputs": inputs}

    return mangle


@pytest.mark.parametrize(
    "mangle",
    [
        _with(1, id=""),
        _with(1, id=5),
        _with(1, id="a\x00b"),
        _with(1, id="a\u200db"),  # not isprintable(), yet allowed
        _with(1, id=_DROP),  # filled in
        _with(1, source="/elsewhere"),
        _with(1, source="not a uri"),
        _with(1, source=_DROP),
        _with(1, specversion="0.3"),
        _with(1, specversion=_DROP),
        _with(1, type="tidings.view.checkpoint"),
        _with(1, partitionkey="x:k"),
        _with(1, partitionkey="v:a\nb"),
        _with(1, partitionkey=5),
        _with(1, time="yesterday"),
        _with(1, time="2026-01-01t00:00:00z"),
        _with(1, subject="s"),
        _with(1, correlationid="order-1"),
        _with(1, correlationid=7),
        _with(1, colour=None),
        _with(1, data=None),  # a deletion
        _with(1, data=5),
        _with(1, data={"value": 1, "more": 2}),
        _with(1, data={}),
        _with(1, data=[1]),
        _with(1, data_base64="AA=="),
        _with(1, data={"value": deep(MAX_DEPTH - 2)}),  # at the limit
        _with(1, data={"value": deep(MAX_DEPTH - 1)}),  # one past it
        _with(5, data={"value": deep(MAX_DEPTH - 1)}),
        _with(1, data={"value": "x" * LIMIT}),
        # deeper than orjson writes (255), not than it reads (1024)
        _with(1, data={"value": deep(300)}),
        _with(3, data={"value": deep(300)}),
        # a change too deep, then another fault: the first is named
        _both(_with(1, data={"value": deep(MAX_DEPTH)}), _with(3, data={"value": "x" * LIMIT})),
        _both(_with(1, data={"value": deep(MAX_DEPTH)}), _with(3, partitionkey="x")),
        _both(_with(1, data={"value": deep(300)}), _with(3, id="")),
        _both(_with(2, data={"value": deep(MAX_DEPTH)}), _inputs({"sales": {"00": 1}})),
        # a checkpoint's partitions: numbers written as a checkpoint writes them
        _inputs({"sales": {"1" * 5000: 1}}),
        _inputs({"sales": {"00": 1}}),
        _inputs({"sales": {"007": 1}}),
        _inputs({"sales": {"1000000": 1}}),
        _inputs({"sales": {"999999": 1}}),
        _inputs({"sales": {"0": 1, "10": 2}}),
        _with(8, partitionkey="v:k"),  # no checkpoint
        _with(8, data={"generation": 1}),
    ],
)
def test_an_odd_or_hostile_change_is_judged_as_the_full_check_judges_it(
    mangle: Callable[[list[dict[str, Any]]], None],
) -> None:
    events = processor_commit()
    mangle(events)
    given = copy.deepcopy(events)
    fast = outcome(lambda: check_commit("v", 0, events, LIMIT))
    assert fast == outcome(lambda: _check_all("v", 0, copy.deepcopy(given), LIMIT))
    assert events == given


def test_the_first_fault_is_named_wherever_the_faults_are() -> None:
    events = processor_commit()
    events[5]["data"] = {"value": deep(MAX_DEPTH)}  # too deep, found after the pass
    events[2]["data"] = {"value": deep(MAX_DEPTH)}
    with pytest.raises(TidingsError) as refused:
        check_commit("v", 0, events, LIMIT)
    assert refused.value.status == 422 and refused.value.fields["index"] == 2
    events = processor_commit()
    events[6]["type"] = "other"
    events[3]["id"] = ""
    with pytest.raises(TidingsError) as refused:
        check_commit("v", 0, events, LIMIT)
    assert refused.value.fields["index"] == 3


def test_a_second_checkpoint_is_refused_wherever_it_is() -> None:
    events = processor_commit()
    events.insert(0, dict(events[-1]))
    with pytest.raises(TidingsError) as refused:
        check_commit("v", 0, events, LIMIT)
    assert refused.value.fields["field"] == f"events[{len(events) - 1}].partitionkey"


@pytest.mark.parametrize("partition", ["1" * 5000, "00", "007", "1000000", "", "-1", "1_0", "٣"])
def test_a_checkpoint_names_partitions_as_numbers_without_leading_zeros(partition: str) -> None:
    events = processor_commit()
    _inputs({"sales": {"0": 1, partition: 2}})(events)
    for check in (check_commit, _check_all):
        with pytest.raises(TidingsError) as refused:
            check("v", 0, copy.deepcopy(events), LIMIT)
        assert refused.value.status == 400
        assert refused.value.fields["field"] == "events[8].data.inputs"
        assert "without leading zeros" in refused.value.detail
    _inputs({"sales": {"0": 1, "10": 2, "999999": 3}})(events)
    assert check_commit("v", 0, events, LIMIT).events[-1]["data"]["inputs"]["sales"]["10"] == 2

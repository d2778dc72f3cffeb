"""A small version of every reliability campaign (``make reliability`` runs them long).

The same campaign code (``tests/support/reliability.py`` and the modules it uses)
with small counts: a few SIGKILLs of a real hub under publishing, under a
consumer group that dead-letters poison events, and under webhook deliveries; a
round on a full disk; flipped bits; power cuts; a short soak. Each must come out
clean: nothing acknowledged lost, nothing stored twice, nothing out of order or
torn, dead letters exactly once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from pathlib import Path

import faults
import killloops
import pytest
from campaign import Result
from reliability import PLANS, Plan, scaled, table


def clean(res: Result) -> Result:
    print(table([res]))
    print(res.to_dict())
    assert res.ran, res.notes
    assert res.problems == [], res.problems
    assert (res.lost, res.duplicated, res.out_of_order, res.torn) == (0, 0, 0, 0)
    assert res.dead_lettered_once is not False
    return res


def seed() -> int:
    s = random.randrange(1 << 32)
    print(f"seed {s}")
    return s


@pytest.mark.timeout(120)
async def test_kill_loop_under_publishing(tmp_path: Path) -> None:
    res = clean(await killloops.publishing(tmp_path, 6, 60, seed(), round_kills=3))
    assert res.kills == 6
    assert res.acknowledged > 100
    assert res.counts["answered as duplicates"] > 0  # the resends reached the dedupe window


@pytest.mark.timeout(180)
async def test_kill_loop_under_a_consumer_group(tmp_path: Path) -> None:
    res = clean(await killloops.groups(tmp_path, 5, 90, seed()))
    assert res.kills == 5
    assert res.dead_lettered_once is True
    assert res.counts["dead-lettered"] > 0


@pytest.mark.timeout(180)
async def test_kill_loop_under_webhook_deliveries(tmp_path: Path) -> None:
    res = clean(await killloops.webhooks(tmp_path, 4, 90, seed()))
    assert res.kills == 4
    assert res.counts["deliveries answered 2xx"] >= res.acknowledged > 0


@pytest.mark.timeout(120)
async def test_a_full_disk_round(tmp_path: Path) -> None:
    res = await faults.disk_full(tmp_path, 1, 60, seed())
    if not res.ran:
        pytest.skip(" ".join(res.notes))
    clean(res)
    assert res.kills == 2
    assert res.counts["publishes refused while full"] > 0


@pytest.mark.timeout(120)
async def test_flipped_bits(tmp_path: Path) -> None:
    res = clean(await faults.bit_flips(tmp_path, 4, 60, seed(), round_kills=4))
    assert res.kills == 4
    flips = res.counts["flips in sealed segments"] + res.counts["flips in active segments"]
    assert flips == 4


@pytest.mark.timeout(180)
async def test_power_cuts() -> None:
    if importlib.util.find_spec("powerloss") is None:
        pytest.skip("tests/support/powerloss.py is not here")
    res = clean(await asyncio.to_thread(faults.power_loss, 10, 60, seed()))
    assert res.cuts == 10


@pytest.mark.timeout(120)
async def test_a_short_soak_stores_every_publish_once_in_order(tmp_path: Path) -> None:
    res = clean(await faults.soak(tmp_path, 8.0, rate=50.0, slow=20, topics=30))
    assert res.acknowledged > 10  # one at a time: few on a busy machine, none lost


def test_the_full_suite_plans_a_thousand_kills_in_bounded_time() -> None:
    kills = {"publishing", "groups", "webhooks", "bit-flips"}
    by_name = {p.name: p for p in PLANS}
    total = sum(by_name[n].count for n in kills) + 2 * by_name["disk-full"].count
    assert total >= 1000
    assert sum(p.seconds for p in PLANS) <= 100 * 60
    assert scaled(Plan("x", 500, 1200), 0.1) == (50, 120.0)
    assert scaled(Plan("x", 5, 100), 0.01) == (1, 10.0)

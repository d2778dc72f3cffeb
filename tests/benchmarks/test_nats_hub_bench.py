"""The NATS benchmark measures each case beside its bare nats-py ceiling, in one run,
on servers and a hub of its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from tidings.benchmarks.nats_hub import main


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.timeout(240)
def test_every_case_is_measured_beside_its_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--replicas", "1", "--seconds", "1", "--records", "2000", "--rounds", "2",
            "--json", "--data-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = orjson.loads(capsys.readouterr().out)
    cases = {row["case"]: row for row in out["figures"]}
    assert sorted(cases) == [
        "group fetch/ack of 1000", "publish batch of 1000", "publish single"
    ]  # fmt: skip
    for row in cases.values():
        assert row["replicas"] == 1 and len(row["rounds"]) == 2
        assert row["ours"] > 0 and row["ceiling"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["ceiling"], abs=0.002)
    assert len(out["load_average"]) == 3


@pytest.mark.parametrize("bad", ["2", "x", "1,5"])
def test_a_bad_replica_count_is_refused_naming_the_option(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--replicas", bad])
    assert "--replicas" in capsys.readouterr().err

"""The handler benchmark reports each concurrency and each shape beside its own ceiling."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tidings.benchmarks.handlers import main, parse_args


def test_each_concurrency_is_measured_beside_its_own_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--events", "1000", "--rounds", "2", "--only", "embedded", "--concurrency", "1,8",
            "--json", "--data-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["concurrency"] == [1, 8]
    levels = out["cases"]["embedded"]
    assert sorted(levels) == ["1", "8"]
    for case in levels.values():
        assert len(case["rounds"]) == 2
        assert all(set(r) == {"bare", "model+ctx", "dict"} for r in case["rounds"])
        assert case["bare_per_s"] > 0
        for shape in ("model+ctx", "dict"):
            assert case[shape]["per_s"] > 0
            assert case[shape]["ratio"] == pytest.approx(
                case[shape]["per_s"] / case["bare_per_s"], abs=0.002
            )


@pytest.mark.parametrize("levels", ["0", "1,1", "x", "", "1001"])
def test_a_bad_concurrency_list_is_refused_naming_the_option(
    levels: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--concurrency", levels])
    assert "--concurrency" in capsys.readouterr().err

"""Compaction of one partition by key: ``python bench/compaction.py [--records N --keys K]``.

Appends N keyed CloudEvents (about 200 bytes each, keys drawn at random from K) to a
fresh partition in batches of 1000, seals it, and times one compaction pass over it
(:func:`tidings.log.compaction.compact_partition`: the key map, then every segment
rewritten). Beside it, from the same run, the floor it is measured against: one read
of every record through the log with its JSON parsed. A pass parses each record once
(for the key map) and decodes it twice (again to rewrite it).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from tidings.log.compaction import compact_partition
from tidings.log.config import FsyncPolicy, LogConfig
from tidings.log.partition import PartitionLog


def _events(n: int, keys: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        orjson.dumps({
            "specversion": "1.0", "id": f"{i:032x}", "source": "/bench", "type": "stock.set",
            "time": "2026-12-05T10:00:00.000Z", "partitionkey": f"sku-{rng.randrange(keys)}",
            "data": {"n": i, "sku": rng.randrange(keys), "note": "x" * 40},
        })
        for i in range(n)
    ]


async def run(records: int, keys: int, directory: Path) -> dict[str, float]:
    log = PartitionLog.open(directory, LogConfig(compaction="key"), FsyncPolicy("never"))
    payloads = _events(records, keys, 1)
    for i in range(0, records, 1000):
        await log.append(payloads[i : i + 1000])
    log.roll()
    await log.flush()
    size_before = log.size_bytes

    start = time.perf_counter()
    offset, parsed = 0, 0
    while offset < log.end_offset:
        got = log.read_now(offset, 10_000, 1 << 24)
        for _, _, payload in got:
            orjson.loads(payload)
        parsed += len(got)
        offset = got[-1][0] + 1
    floor = time.perf_counter() - start

    start = time.perf_counter()
    result = await compact_partition(log, 0)
    took = time.perf_counter() - start
    kept = 0
    offset = 0
    while offset < log.end_offset:
        got = log.read_now(offset, 10_000, 1 << 24)
        if not got:
            break
        kept += len(got)
        offset = got[-1][0] + 1
    out = {
        "records": records, "keys": keys, "segments": result.segments,
        "removed": result.removed, "kept": kept, "bytes_before": size_before,
        "bytes_after": log.size_bytes, "seconds": took, "floor_seconds": floor,
    }  # fmt: skip
    await log.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tidings-compaction-"))
    try:
        r = asyncio.run(run(args.records, args.keys, directory / "p"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(
        f"compaction of {r['records']:,} records over {r['keys']:,} keys "
        f"({r['segments']:.0f} segments, {r['bytes_before'] / 1e6:.0f} MB): "
        f"{r['seconds']:.2f} s ({r['records'] / r['seconds']:,.0f} records/s), "
        f"{r['removed']:,.0f} removed, {r['kept']:,.0f} kept, "
        f"{r['bytes_after'] / 1e6:.2f} MB left"
    )
    print(
        f"floor: one read of every record with its JSON parsed: {r['floor_seconds']:.2f} s "
        f"({r['records'] / r['floor_seconds']:,.0f} records/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The HTTP ingest benchmark's load: ``wrk`` with a Lua script, or an aiohttp loop.

Each posts one body over and over to one URL and gives a :class:`Load`: the 2xx
answers counted exactly, every other answer as a failure, and the answers'
latency. A body holding :data:`TAG_MARK` is sent with the mark replaced by a tag
unique to each request. Used by :mod:`tidings.benchmarks.http_ingest` and
:mod:`tidings.benchmarks.shop`.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from tidings.benchmarks.processes import BenchmarkFailed

# Bounds besides --seconds: how far past its deadline a measurement may run, and how
# many events an anchor may send.
_GRACE_S = 30.0
_MAX_REQUESTS = 20_000_000

_now = time.perf_counter

# Keyed events' ids hold this mark; each request replaces it with a tag of TAG_LEN
# characters of its own (two of the run, two of the wrk thread, eight of a counter).
TAG_MARK = b"~TAG~"
TAG_LEN = 12


@dataclass(frozen=True, slots=True)
class Load:
    """What one load run saw: 2xx answers, everything else, and the answers' latency."""

    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    events_per_request: int

    @property
    def req_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.req_per_s * self.events_per_request


# -- load generators ----------------------------------------------------------------------

_WRK_SCRIPT = """\
local f = assert(io.open([==[{body}]==], "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local mark = "{mark}"
local parts = nil
if mark == "" then
  wrk.body = body
else
  parts = {{}}
  local i = 1
  while true do
    local j = string.find(body, mark, i, true)
    if not j then table.insert(parts, string.sub(body, i)) break end
    table.insert(parts, string.sub(body, i, j - 1))
    i = j + #mark
  end
end
-- Per thread: the 2xx answers it counted, and the requests it made.
ok = 0
sent = 0
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 end
end
if parts ~= nil then
  -- Each request's ids carry a tag of its own: run, thread, counter.
  function request()
    sent = sent + 1
    return wrk.format(nil, nil, nil, table.concat(parts, string.format("{run}%02d%08d", tid, sent)))
  end
end
function done(s, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("ok") end
  local e = s.errors
  io.write(string.format('TIDINGS_WRK {{"requests":%d,"ok":%d,"duration_us":%d,"connect":%d,' ..
    '"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n',
    s.requests, n, s.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Wrk:
    """``wrk`` with a Lua script that POSTs one body, counts the 2xx answers exactly,
    and reports its summary as JSON. A body holding :data:`TAG_MARK` is sent with the
    mark replaced by a tag unique to each request."""

    def __init__(self, exe: str, threads: int, scratch: Path) -> None:
        self.exe = exe
        self.threads = threads
        self.scratch = scratch
        self.runs = 0

    @property
    def version(self) -> str:
        out = subprocess.run([self.exe, "-v"], capture_output=True, text=True, timeout=10)
        found = re.search(r"wrk (\S+)", out.stdout + out.stderr)
        return f"wrk {found.group(1) if found else '?'}"

    def run(
        self, url: str, body: bytes, content_type: str, events: int, connections: int, seconds: int
    ) -> Load:
        self.runs += 1
        if self.runs > 99:
            raise BenchmarkFailed("more than 99 wrk runs: request tags would repeat")
        body_path = self.scratch / f"body-{self.runs}.json"
        body_path.write_bytes(body)
        script = self.scratch / f"post-{self.runs}.lua"
        mark = TAG_MARK.decode() if TAG_MARK in body else ""
        script.write_text(
            _WRK_SCRIPT.format(
                body=body_path, content_type=content_type, mark=mark, run=f"{self.runs:02d}"
            )
        )
        threads = min(self.threads, connections)
        if threads > 99:
            raise BenchmarkFailed("at most 99 wrk threads")
        argv = [
            self.exe,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + _GRACE_S)
        found = re.search(r"^TIDINGS_WRK (\{.*\})$", out.stdout, re.MULTILINE)
        if out.returncode != 0 or found is None:
            raise BenchmarkFailed(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
        s = orjson.loads(found.group(1))
        # Every request that did not get a 2xx answer failed, whatever its status.
        errors = s["requests"] - s["ok"] + s["connect"] + s["read"] + s["write"] + s["timeout"]
        return Load(
            ok=s["ok"],
            errors=errors,
            seconds=s["duration_us"] / 1e6,
            p50_ms=s["p50_us"] / 1000,
            p99_ms=s["p99_us"] / 1000,
            events_per_request=events,
        )


async def aiohttp_load(
    url: str, body: bytes, content_type: str, events: int, connections: int, seconds: int
) -> Load:
    """The fallback: ``connections`` tasks in this process, each POSTing in a loop
    (a body holding :data:`TAG_MARK` with a tag of its own in each request)."""
    latencies: list[float] = []
    errors = 0
    run = next(_aiohttp_runs)
    tagged = TAG_MARK in body
    headers = {"Content-Type": content_type}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(n: int) -> None:
            nonlocal errors
            sent_count = 0
            while _now() < deadline and len(latencies) + errors < _MAX_REQUESTS:
                sent_count += 1
                data = body
                if tagged:
                    data = body.replace(TAG_MARK, b"%02d%04d%06d" % (run % 100, n, sent_count))
                sent = _now()
                try:
                    async with session.post(url, data=data, headers=headers) as r:
                        await r.read()
                        ok = 200 <= r.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(_now() - sent)
                else:
                    errors += 1

        start = _now()
        deadline = start + seconds
        async with asyncio.timeout(seconds + _GRACE_S):
            await asyncio.gather(*(worker(n) for n in range(connections)))
        elapsed = _now() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[int(q * (len(latencies) - 1))] * 1000 if latencies else 0.0

    return Load(len(latencies), errors, elapsed, pct(0.50), pct(0.99), events)


_aiohttp_runs = itertools.count(1)

LoadFn = Callable[[str, bytes, str, int, int, int], Load]

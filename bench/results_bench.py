"""The results reader over a 100 MB Anthropic results file: throughput and peak memory.

A results file of ``--mib`` MiB (default 100) is written to a temporary directory, a line at a
time: Anthropic message batch results, 90% succeeded with usage, the rest errored, canceled or
expired. Then ``--runs`` times :class:`pipeline.core.results.ResultsTally` fed the file in 64 KiB
chunks (the reader's way: the file is never held whole), then ``--runs`` times the whole reader
fetching it over HTTP from a loopback server, and after those the baseline, the naive way: read
the whole file, split its lines, parse each (not interleaved: the peak RSS, the process's
``ru_maxrss``, only grows, so the streamed runs go first). All must give the same sums.

    python -m bench.results_bench [--mib N] [--runs R] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from aiohttp import web

from bench.report import save
from pipeline.config import SourceConfig
from pipeline.core.models import Envelope
from pipeline.core.results import ResultsTally
from pipeline.core.secret import Secret
from pipeline.polling.client import ProviderClient
from pipeline.polling.metrics import SourceMetrics
from pipeline.polling.results import ResultsReader
from pipeline.polling.retry import RetryPolicy
from pipeline.providers import adapter

CHUNK = 64 << 10


def write_file(path: Path, mib: int) -> int:
    """An Anthropic results file of about ``mib`` MiB; returns its lines."""
    rng = random.Random(16)  # benchmark data, not security
    lines, size = 0, 0
    with path.open("wb") as out:
        while size < mib << 20:
            kind = rng.choices(("succeeded", "errored", "canceled", "expired"), (90, 5, 3, 2))[0]
            result: dict[str, object] = {"type": kind}
            if kind == "succeeded":
                result["message"] = {
                    "id": f"msg_{lines:012d}", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929",
                    "content": [{"type": "text", "text": "x" * rng.randint(200, 1200)}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": rng.randint(10, 5000), "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": rng.choice((0, 1024)),
                              "output_tokens": rng.randint(10, 800)}}
            data = orjson.dumps({"custom_id": f"req-{lines}", "result": result}) + b"\n"
            out.write(data)
            size += len(data)
            lines += 1
    return lines


def streamed(path: Path) -> tuple[int, int, int]:
    tally = ResultsTally()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            tally.feed(chunk)
    used = tally.usage()
    return used.input_tokens or 0, used.cached_input_tokens or 0, used.output_tokens or 0


def reader(path: Path) -> tuple[int, int, int]:
    """The whole results reader (:class:`pipeline.polling.results.ResultsReader`): the file served
    by a loopback aiohttp app in this process, fetched by the source's client and summed as it
    arrives; what it publishes is the result."""
    return asyncio.run(_read_over_http(path))


async def _read_over_http(path: Path) -> tuple[int, int, int]:
    async def results(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, chunk_size=CHUNK)

    app = web.Application()
    app.router.add_get("/v1/messages/batches/msgbatch_bench/results", results)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        source = SourceConfig(name="bench", provider="anthropic", base_url=url, api_key=Secret("sk-bench"),
                              read_results=True, max_rps=100.0)
        sink = Captured()
        metrics = SourceMetrics("bench", "anthropic")
        client = ProviderClient(source, adapter("anthropic"), RetryPolicy(), metrics)
        read = ResultsReader(source, client)
        read.offer([("msgbatch_bench", {"id": "msgbatch_bench", "results_url": "x"}, "completed")])
        async with client.session() as session:
            await read.read(session, sink)
    finally:
        await runner.cleanup()
    (envelope,) = sink.envelopes
    got = envelope.results or {}
    return got["input_tokens"], got["cached_input_tokens"], got["output_tokens"]


class Captured:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def publish(self, envelopes: list[Envelope]) -> None:
        self.envelopes += envelopes


def whole(path: Path) -> tuple[int, int, int]:
    """The baseline: the whole file in memory, every line parsed."""
    inputs = cached = outputs = 0
    for line in path.read_bytes().splitlines():
        result = orjson.loads(line)["result"]
        if result["type"] == "succeeded":
            used = result["message"]["usage"]
            read = used["cache_read_input_tokens"]
            inputs += used["input_tokens"] + used["cache_creation_input_tokens"] + read
            cached += read
            outputs += used["output_tokens"]
    return inputs, cached, outputs


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="save the figures for bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="results-bench-") as tmp:
        path = Path(tmp) / "results.jsonl"
        lines = write_file(path, args.mib)
        size = path.stat().st_size / (1 << 20)
        before = peak_mib()
        paths = (("streamed (ResultsTally)", streamed), ("the reader over HTTP (ResultsReader)", reader),
                 ("whole file (baseline)", whole))
        times: dict[str, list[float]] = {name: [] for name, _ in paths}
        peaks: dict[str, float] = {}
        sums = set()
        for name, fn in paths:
            for _ in range(args.runs):
                start = time.perf_counter()
                sums.add(fn(path))
                times[name].append(time.perf_counter() - start)
            peaks[name] = peak_mib()
    assert len(sums) == 1, f"the two paths disagree: {sums}"
    figures = [{"path": name, "MiB": size, "lines": lines, "seconds (median)": statistics.median(t),
                "MiB/s": size / statistics.median(t), "lines/s": lines / statistics.median(t),
                "peak RSS after (MiB)": peaks[name]} for name, t in times.items()]
    for row in figures:
        print(row)
    print(f"peak RSS before either: {before:,.0f} MiB")
    if args.record:
        save("results", f"Results reader: a {args.mib} MiB Anthropic results file, streamed (issue 16)",
             figures, notes=NOTES.format(before=before))


NOTES = """
The core of the results reader (`pipeline.core.results.ResultsTally`: streamed in 64 KiB
chunks, capped in bytes and lines, one line held at a time) reading the file from disk; the whole
reader (`pipeline.polling.results.ResultsReader`: one GET through the source's client, the body
fed to the tally as it arrives, the sums published) with the file served by a loopback aiohttp
app in the same process (so its time includes serving it, on the same cores); and the baseline,
reading the whole file and parsing every line. Runs in that order, so each peak RSS includes the
paths before it, and the baseline's the whole file in memory. Peak RSS before any: {before:,.0f}
MiB (the interpreter, orjson, aiohttp).
"""


if __name__ == "__main__":
    main()

"""Load test of the MCP server over streamable HTTP on the embedded model (issue #6 acceptance).

    python benchmarks/load_http.py            # 8 clients x 20 focus_zoom calls; writes results/load_http/report.*

Starts ``python -m mcp_server --transport streamable-http`` on 127.0.0.1 (a free port) with the shipped embedded
model, ``--no-result-reuse`` (every call runs the model; a cache hit would be legitimate but would not load the
server) and a temporary folder of synthetic images as the only allowed root. Then:

1. **sequential** (warm-up; the model loads on the first call): one client asks every distinct (image, question)
   pair once and keeps the answer and the ranked regions as the reference;
2. **concurrent warm-up**: ``clients`` sessions x ``warmup_calls_per_client`` calls. The server's RSS steps up
   once when calls first overlap (about 90 MiB here: a worker thread per waiting call; about half of the step is
   their allocator arenas, it halves with ``MALLOC_ARENA_MAX=2``) and then stays put (four further rounds of 160
   calls: 527-533 MiB); this round takes that step so that the load below measures growth, not the one-time step
   (both figures are reported);
3. **load**: ``clients`` asyncio tasks, each with its own streamable-HTTP ``mcp.Client`` session, make
   ``calls_per_client`` ``focus_zoom`` calls each, cycling over the pairs from a per-client offset, so every pair
   is asked several times, interleaved.

Checks: no failed call; every answer (text, targets, region ids, boxes, confidences) of phases 2 and 3 identical
to the sequential one for the same input; the server's resident memory (``VmRSS`` of ``/proc/<pid>/status``) after
the load within ``rss_growth_limit`` of its value before it. The report gives calls, failures, mismatches, model
runs (calls without a cache hit), wall time, latency percentiles, and RSS after start, after the sequential pass,
before and after the load, the peak sampled during the load and ``VmHWM``. ``tests/server/test_load_http.py`` runs
the same load and asserts the checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "load_http"
EMBEDDED = REPO / "focus_tool" / "embedded" / "model"

Pair = tuple[str, str]  # (image path, question)


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """What to run. Defaults: the acceptance load (8 x 20 on the embedded model, 4 images x 5 questions)."""

    clients: int = 8
    calls_per_client: int = 20
    warmup_calls_per_client: int = 3  # concurrent warm-up round before the load (0: none)
    images: int = 4
    questions_per_image: int = 5
    max_side: int = 640  # long side of the rendered synthetic images, px
    seed: int = 0
    model: str = str(EMBEDDED)
    result_reuse: bool = False  # False: --no-result-reuse, every call runs the model
    rss_growth_limit: float = 0.15  # allowed RSS growth over the load, as a fraction of the RSS after warm-up
    server_timeout_s: float = 120.0  # longest wait for the port / for one call

    def __post_init__(self) -> None:
        for name in ("clients", "calls_per_client", "images", "questions_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_calls_per_client < 0:
            raise ValueError(f"warmup_calls_per_client must be >= 0, got {self.warmup_calls_per_client}")


@dataclass
class CallRecord:
    """One call's outcome."""

    pair: int
    seconds: float
    error: str = ""
    signature: str = ""  # answer + targets + regions, JSON; compared with the sequential reference
    cache_hit: bool = False


@dataclass
class Phase:
    """Calls of one phase and its wall time."""

    calls: list[CallRecord] = field(default_factory=list)
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------------- inputs


def make_inputs(spec: LoadSpec, folder: Path) -> list[Pair]:
    """Render ``spec.images`` synthetic scenes into ``folder``; per image, its benchmark question plus questions about
    the other cards in it (dot colour / count), ``spec.questions_per_image`` in all."""
    from focus_tool.data.synthetic import benchmark_items, question_text, render

    pairs: list[Pair] = []
    for i, item in enumerate(benchmark_items(spec.seed, spec.images)):
        path = folder / f"scene_{i}.png"
        render(item.scene, max_side=spec.max_side).save(path)
        questions = [item.question.text]
        for card in item.scene.cards:
            for kind in ("attribute", "count"):
                q = question_text(kind, (card.name,))
                if q not in questions:
                    questions.append(q)
        pairs += [(str(path), q) for q in questions[: spec.questions_per_image]]
    return pairs


# ---------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A memory figure of ``/proc/<pid>/status`` in KiB (VmRSS: resident now; VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


def start_server(spec: LoadSpec, root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``python -m mcp_server`` over streamable HTTP on 127.0.0.1:``port``; stderr to ``log``."""
    args = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", str(port)]
    args += ["--model", spec.model, "--allowed-root", str(root), "--log-level", "WARNING"]
    args += ["--queue", str(max(16, spec.clients)), "--timeout", str(spec.server_timeout_s)]
    if not spec.result_reuse:
        args.append("--no-result-reuse")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    with log.open("w") as err:
        return subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``; raise if the server exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s:.0f} s")


# ---------------------------------------------------------------------------------------------------- clients


def signature(structured: dict[str, Any]) -> str:
    """What must not change between identical calls: answer, targets, regions (ids, boxes, confidences).

    A region id is ``<call token>-r<n>``: the token is fresh on every call, the ``r<n>`` part is the result's own.
    """
    regions = [(r["id"].rsplit("-", 1)[-1], r["box"], r["confidence"], r["target"]) for r in structured["regions"]]
    return json.dumps([structured["answer"], structured["targets"], regions])


async def call_zoom(client: Any, pairs: list[Pair], index: int) -> CallRecord:
    """One focus_zoom call; failures are recorded, never raised."""
    image, question = pairs[index]
    t0 = time.perf_counter()
    try:
        result = await client.call_tool("focus_zoom", {"image_path": image, "question": question})
    except Exception as e:  # a transport failure is a failed call, with its type for the report
        return CallRecord(pair=index, seconds=time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    if result.is_error or result.structured_content is None:
        text = getattr(result.content[0], "text", "") if result.content else ""
        return CallRecord(pair=index, seconds=seconds, error=text or "error without text")
    sc = result.structured_content
    return CallRecord(pair=index, seconds=seconds, signature=signature(sc), cache_hit=sc["session"]["cache_hit"])


async def sequential(url: str, pairs: list[Pair]) -> Phase:
    """One client, every pair once, in order."""
    from mcp import Client

    phase = Phase()
    t0 = time.perf_counter()
    async with Client(url) as client:
        for i in range(len(pairs)):
            phase.calls.append(await call_zoom(client, pairs, i))
    phase.wall_s = time.perf_counter() - t0
    return phase


async def concurrent(url: str, pairs: list[Pair], *, clients: int, calls: int, pid: int) -> tuple[Phase, int]:
    """``clients`` sessions at once, ``calls`` calls each; returns the phase and the peak RSS sampled (KiB)."""
    from mcp import Client

    phase = Phase()
    stride = max(1, len(pairs) // clients)

    async def one_client(c: int) -> None:
        async with Client(url) as client:
            for i in range(calls):
                phase.calls.append(await call_zoom(client, pairs, (c * stride + i) % len(pairs)))

    peak = 0
    done = asyncio.Event()

    async def sample_rss() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one_client(c) for c in range(clients)))
    finally:
        phase.wall_s = time.perf_counter() - t0
        done.set()
        await sampler
    return phase, peak


# ---------------------------------------------------------------------------------------------------- the run


def _latency(calls: list[CallRecord]) -> dict[str, float]:
    s = sorted(c.seconds for c in calls)
    if not s:
        return {}

    def pick(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]

    return {
        "mean": round(statistics.fmean(s), 4),
        "p50": round(pick(0.5), 4),
        "p95": round(pick(0.95), 4),
        "max": round(s[-1], 4),
    }


async def run_load(spec: LoadSpec, workdir: Path) -> dict[str, Any]:
    """Start the server, run both phases, stop it; the report as a dict (see the module docstring)."""
    root = workdir / "images"
    root.mkdir(parents=True, exist_ok=True)
    pairs = make_inputs(spec, root)
    port = free_port()
    log = workdir / "server.log"
    t_start = time.perf_counter()
    load_avg = os.getloadavg()[0]
    proc = start_server(spec, root, port, log)
    try:
        wait_for_port(port, proc, spec.server_timeout_s)
        url = f"http://127.0.0.1:{port}/mcp"
        rss_start = rss_kib(proc.pid)
        seq = await sequential(url, pairs)
        rss_seq = rss_kib(proc.pid)
        warm = Phase()
        if spec.warmup_calls_per_client:
            warm, _ = await concurrent(
                url, pairs, clients=spec.clients, calls=spec.warmup_calls_per_client, pid=proc.pid
            )
        rss_warm = rss_kib(proc.pid)
        conc, rss_peak = await concurrent(url, pairs, clients=spec.clients, calls=spec.calls_per_client, pid=proc.pid)
        rss_after = rss_kib(proc.pid)
        hwm = rss_kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    reference = {c.pair: c.signature for c in seq.calls if not c.error}
    failures = [c for c in seq.calls + warm.calls + conc.calls if c.error]

    def mismatched(phase: Phase) -> int:
        return sum(1 for c in phase.calls if not c.error and c.signature != reference.get(c.pair))

    def model_runs(phase: Phase) -> int:
        return sum(1 for c in phase.calls if not c.error and not c.cache_hit)

    answers: dict[str, Any] = {}
    for c in seq.calls:
        if not c.error:
            image, question = pairs[c.pair]
            answers[f"{Path(image).name}: {question}"] = json.loads(c.signature)[0]
    growth = (rss_after - rss_warm) / rss_warm
    model = Path(spec.model).resolve()
    shown_model = str(model.relative_to(REPO)) if model.is_relative_to(REPO) else spec.model
    return {
        "spec": {**asdict(spec), "model": shown_model},
        "server": {"transport": "streamable-http", "host": "127.0.0.1", "pid_rss_source": "/proc/<pid>/status"},
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1min_at_start": round(load_avg, 2),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
            "python": sys.version.split()[0],
        },
        "inputs": {"images": spec.images, "distinct_pairs": len(pairs), "image_sides_px": spec.max_side},
        "sequential": {
            "calls": len(seq.calls),
            "failed": sum(1 for c in seq.calls if c.error),
            "wall_s": round(seq.wall_s, 2),
            "latency_s": _latency(seq.calls),
        },
        "concurrent_warmup": {
            "clients": spec.clients,
            "calls": len(warm.calls),
            "failed": sum(1 for c in warm.calls if c.error),
            "mismatched_answers": mismatched(warm),
            "model_runs": model_runs(warm),
            "wall_s": round(warm.wall_s, 2),
        },
        "concurrent": {
            "clients": spec.clients,
            "calls": len(conc.calls),
            "failed": sum(1 for c in conc.calls if c.error),
            "mismatched_answers": mismatched(conc),
            "model_runs": model_runs(conc),
            "cache_hits": sum(1 for c in conc.calls if c.cache_hit),
            "wall_s": round(conc.wall_s, 2),
            "calls_per_s": round(len(conc.calls) / conc.wall_s, 2) if conc.wall_s else None,
            "latency_s": _latency(conc.calls),
        },
        "memory_mib": {
            "rss_after_start": round(rss_start / 1024, 1),
            "rss_after_sequential": round(rss_seq / 1024, 1),
            "rss_before_load": round(rss_warm / 1024, 1),
            "rss_after_load": round(rss_after / 1024, 1),
            "rss_peak_sampled_during_load": round(rss_peak / 1024, 1),
            "vm_hwm": round(hwm / 1024, 1),
            "growth_over_load_pct": round(100 * growth, 2),
            "limit_pct": round(100 * spec.rss_growth_limit, 1),
        },
        "checks": {
            "no_failed_calls": not failures,
            "answers_identical_to_sequential": mismatched(warm) + mismatched(conc) == 0,
            "memory_flat": growth < spec.rss_growth_limit,
        },
        "failures": [{"pair": c.pair, "error": c.error[:300]} for c in failures[:10]],
        "sequential_answers": answers,
        "total_wall_s": round(time.perf_counter() - t_start, 2),
    }


def report_markdown(report: dict[str, Any], command: str) -> str:
    """A short human-readable summary of ``report``."""
    s, w, c, m = report["sequential"], report["concurrent_warmup"], report["concurrent"], report["memory_mib"]
    ok = all(report["checks"].values())
    lines = [
        "# MCP server load test (streamable HTTP, embedded model)",
        "",
        f"Command: `{command}`",
        "",
        f"Model `{report['spec']['model']}`, {report['inputs']['distinct_pairs']} distinct "
        f"(image, question) pairs on {report['inputs']['images']} synthetic images, result reuse "
        f"{'on' if report['spec']['result_reuse'] else 'off (every call runs the model)'}.",
        "",
        "| phase | calls | failed | mismatched answers | model runs | wall s | calls/s | p50 s | p95 s | max s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| sequential (1 client, warm-up) | {s['calls']} | {s['failed']} | - | {s['calls']} | {s['wall_s']} | "
        f"{s['calls'] / s['wall_s']:.2f} | {s['latency_s']['p50']} | {s['latency_s']['p95']} | "
        f"{s['latency_s']['max']} |",
        f"| concurrent warm-up ({w['clients']} clients) | {w['calls']} | {w['failed']} | {w['mismatched_answers']} | "
        f"{w['model_runs']} | {w['wall_s']} | - | - | - | - |",
        f"| load ({c['clients']} clients) | {c['calls']} | {c['failed']} | {c['mismatched_answers']} | "
        f"{c['model_runs']} | {c['wall_s']} | {c['calls_per_s']} | {c['latency_s']['p50']} | "
        f"{c['latency_s']['p95']} | {c['latency_s']['max']} |",
        "",
        f"Server RSS (MiB): {m['rss_after_start']} after start, {m['rss_after_sequential']} after the sequential "
        f"pass, {m['rss_before_load']} after the concurrent warm-up (the one-time step when calls first overlap), "
        f"{m['rss_after_load']} after the load ({m['growth_over_load_pct']:+.2f} %, limit {m['limit_pct']} %); "
        f"peak sampled during the load {m['rss_peak_sampled_during_load']}, VmHWM {m['vm_hwm']}.",
        "",
        f"Checks: {', '.join(f'{k} = {v}' for k, v in report['checks'].items())} -> {'PASS' if ok else 'FAIL'}.",
        "",
        "One inference runs at a time (the server's gate), so concurrent calls queue: the latency of a call is its "
        "queue wait plus its own run; throughput is that of one model on the CPU.",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path, *, command: str, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "command": command}
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(report_markdown(report, command))
    return js, md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--calls", type=int, default=20, help="calls per client")
    p.add_argument("--warmup-calls", type=int, default=3, help="calls per client in the concurrent warm-up")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--questions", type=int, default=5, help="questions per image")
    p.add_argument("--model", default=str(EMBEDDED), help="checkpoint (default: the embedded model)")
    p.add_argument("--result-reuse", action="store_true", help="keep the session cache's result reuse on")
    p.add_argument("--out", type=Path, default=RESULTS, help="report folder")
    args = p.parse_args(argv)
    spec = LoadSpec(
        clients=args.clients,
        calls_per_client=args.calls,
        warmup_calls_per_client=args.warmup_calls,
        images=args.images,
        questions_per_image=args.questions,
        model=args.model,
        result_reuse=args.result_reuse,
    )
    with tempfile.TemporaryDirectory(prefix="focus-load-") as tmp:
        report = asyncio.run(run_load(spec, Path(tmp)))
    command = shlex.join(["python", "benchmarks/load_http.py", *(argv if argv is not None else sys.argv[1:])])
    js, md = write_report(report, args.out, command=command)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

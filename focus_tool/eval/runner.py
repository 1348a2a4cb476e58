"""The evaluation runner: method x benchmark -> per-item JSONL (resumable), JSON + Markdown report, PNG plot.

Efficiency accounting, the same for every method:
- forward passes counted at the adapter boundary per phase (search / answer / aux), FOCUS App. A.2;
- prefill tokens summed over all calls of a question (decode steps not counted);
- analytic TFLOPs: for every counted sequence of n prefill tokens, ``L * (4 n d^2 + 2 n^2 d + 2 n d m)``
  multiply-accumulates (FastV / PyramidDrop formula as FOCUS uses it, benchmarks.md §7), LLM only: the vision
  encoder and decode steps are excluded; batched calls are split evenly over their sequences;
- wall-clock per question (``time.perf_counter``, CUDA synchronised) and peak memory: CUDA max allocated when CUDA
  is used, else the process's peak RSS (``resource.getrusage``; monotonic over the process).

Items: every benchmark row is one independent item, run and scored on its own. On HR-Bench each row is one cyclic
option order of a question (benchmarks.md §3.3): the method, search included, runs once per row and nothing is shared
between the rows of a cyclic group (ZoomEye's and RAP's own scripts search once per question and answer the 4 orders
on the same crops; this harness does not); accuracy is averaged over the ``cycle_category`` groups as the official
scorer does (:func:`focus_tool.eval.scoring.accuracy_breakdown`).

Data-parallel: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) accelerate's ``PartialState`` (CPU: gloo)
gives each rank the items ``rank::N``; ranks append to their own shard file, rank 0 merges the shards into
``<report>.items.jsonl`` in item order and writes the report, so the result equals a one-process run.

Resume: items already in ``<report>.items.jsonl`` (or a rank shard) are skipped, keyed by (method, item id). Those
keys say nothing about the model or settings that produced a record, so ``<report>.run.json`` stores the run
signature (:func:`run_signature`) and a run whose signature differs from the stored one is refused instead of
mixing its records with the old ones. Methods are not in the signature: adding a method to a report is a feature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from PIL import Image, ImageDraw

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, Method
from focus_tool.errors import FocusError
from focus_tool.eval.accounting import FLOPS_FORMULA, RecordingCounter, llm_dims, peak_mem_mb, tflops
from focus_tool.eval.datasets import SUFFIXES, EvalItem, load_benchmark
from focus_tool.eval.scoring import accuracy_breakdown, predicted_letter
from focus_tool.methods import MethodOptions, build_method, method_spec

logger = logging.getLogger(__name__)

TIMING_KEYS: Final[frozenset[str]] = frozenset({"wall_s", "peak_mem_mb"})


# ---------------------------------------------------------------------------------------------------- one item


def default_scheme(benchmark: str, model: str | None = None) -> str:
    """The answer scheme used when none is given: the checkpoint preset's ``answer.scheme`` when it says "logit"
    (the embedded model cannot answer with letters), else the official regex on MME-RealWorld and lenient letters
    elsewhere. Read from the checkpoint's ``focus_preset.json``, before the model is loaded."""
    from focus_tool.adapters.registry import default_model_path
    from focus_tool.presets import read_preset_file

    folder = default_model_path() if model is None else Path(model).expanduser()
    overrides = (read_preset_file(None, folder) or {}).get("overrides", {})
    if isinstance(overrides, dict) and overrides.get("answer.scheme") == "logit":
        return "logit"
    return "mme-regex" if benchmark == "mme-rw-lite" else "letter-lenient"


def run_item(method: Method, item: EvalItem, *, benchmark: str, scheme: str, device: str = "cpu") -> dict[str, Any]:
    """Run one question and score it; returns the per-item record."""
    counter = method.adapter.counter
    if isinstance(counter, RecordingCounter):
        counter.calls.clear()
    image = item.load_image()
    answer_scheme: AnswerScheme = "logit" if scheme == "logit" else "letter"
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = method.run(
        image, question=item.question, options=list(item.options), scheme=answer_scheme, suffix=SUFFIXES[benchmark]
    )
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    reply = result.answer or ""
    raw = json.loads(item.extra["raw_options"]) if "raw_options" in item.extra else None
    pred = predicted_letter(reply, item.options, scheme, raw)
    calls = list(counter.calls) if isinstance(counter, RecordingCounter) else []
    tf = tflops(calls, llm_dims(method.adapter)) if calls else None
    return {
        "item_id": item.item_id,
        "method": method.name,
        "category": item.category,
        "extra": {k: v for k, v in item.extra.items() if k in ("cycle_category", "task", "subtask")},
        "answer": item.answer_letter,
        "pred": pred,
        "reply": reply,
        "correct": pred == item.answer_letter,
        "search_fps": result.forward_passes.search,
        "answer_fps": result.forward_passes.answer,
        "aux_fps": result.forward_passes.aux,
        "prefill_tokens": result.prefill_tokens,
        "phase_tokens": result.forward_passes.tokens.model_dump(),
        "phase_images": result.forward_passes.images.model_dump(),
        "phase_continuations": result.forward_passes.continuations.model_dump(),
        "tflops": None if tf is None else round(tf, 6),
        "answer_boxes": [list(b) for b in result.answer_boxes],
        "wall_s": round(wall, 4),
        "peak_mem_mb": round(peak_mem_mb(device), 1),
    }


# ---------------------------------------------------------------------------------------------------- files


def items_path(report: Path) -> Path:
    """The merged per-item JSONL next to the report."""
    return report.with_name(report.stem + ".items.jsonl")


def _shard_path(report: Path, rank: int) -> Path:
    return report.with_name(f"{report.stem}.items.rank{rank}.jsonl")


def signature_path(report: Path) -> Path:
    """The run signature sidecar next to the report."""
    return report.with_name(report.stem + ".run.json")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file (a torn last line from an interrupted run is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            logger.warning("skipping a malformed line in %s", path)
    return out


def _done_keys(report: Path) -> set[tuple[str, str]]:
    files = [items_path(report), *report.parent.glob(f"{report.stem}.items.rank*.jsonl")]
    return {(r["method"], r["item_id"]) for f in files for r in read_records(f)}


def _merge(report: Path, order: dict[str, int]) -> list[dict[str, Any]]:
    files = [items_path(report), *sorted(report.parent.glob(f"{report.stem}.items.rank*.jsonl"))]
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for f in files:
        for r in read_records(f):
            by_key.setdefault((r["method"], r["item_id"]), r)
    merged = sorted(by_key.values(), key=lambda r: (r["method"], order.get(r["item_id"], 1 << 30), r["item_id"]))
    tmp = items_path(report).with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in merged))
    tmp.replace(items_path(report))
    for f in files[1:]:
        f.unlink()
    return merged


# ---------------------------------------------------------------------------------------------------- summary


def _mean(rs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rs if r.get(key) is not None]
    return round(sum(vals) / len(vals), 6) if vals else None


def _phase_means(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-phase means of the computed tokens, encoded images and cached-prefix continuations (records that
    carry them; older records do not)."""
    out: dict[str, Any] = {}
    for key in ("phase_tokens", "phase_images", "phase_continuations"):
        have = [r[key] for r in rs if isinstance(r.get(key), dict)]
        if have:
            out[f"{key}_mean"] = {p: round(sum(h[p] for h in have) / len(have), 4) for p in ("search", "answer", "aux")}
    return out


def summarize(records: list[dict[str, Any]], *, benchmark: str, scheme: str) -> dict[str, Any]:
    """Per-method report entries from per-item records."""
    out: dict[str, Any] = {}
    for name in sorted({r["method"] for r in records}):
        rs = [r for r in records if r["method"] == name]
        acc = accuracy_breakdown(rs, benchmark)
        out[name] = {
            "accuracy": round(acc["accuracy"], 6),
            "n": len(rs),
            "answer_scheme": scheme,
            "search_fps_mean": _mean(rs, "search_fps"),
            "answer_fps_mean": _mean(rs, "answer_fps"),
            "aux_fps_mean": _mean(rs, "aux_fps"),
            "prefill_tokens_mean": _mean(rs, "prefill_tokens"),
            **_phase_means(rs),
            "tflops_mean": _mean(rs, "tflops"),
            "wall_s_mean": _mean(rs, "wall_s"),
            "peak_mem_mb": max((r["peak_mem_mb"] for r in rs), default=None),
            "breakdown": {k: v for k, v in acc.items() if k not in ("accuracy", "n")},
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = [
        f"# {report['benchmark']} evaluation",
        "",
        f"- command: `{report['command']}`",
        f"- model: `{report['model']}`; data: `{report['data']}`; seed {report['seed']}; limit {report['limit']}",
        f"- answer scheme: **{report['answer_scheme']}**",
        f"- TFLOPs: {report['flops_formula']}",
        f"- peak memory: {report['peak_memory_kind']}",
        "",
        "| method | n | accuracy | search FPs | answer FPs | aux FPs | prefill tokens | TFLOPs | s/question "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, nd: int = 2) -> str:
        return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)

    for name, m in report["methods"].items():
        lines.append(
            f"| {name} | {m['n']} | {100 * m['accuracy']:.2f} | {f(m['search_fps_mean'])} | {f(m['answer_fps_mean'])} "
            f"| {f(m['aux_fps_mean'])} | {f(m['prefill_tokens_mean'], 0)} | {f(m['tflops_mean'], 4)} "
            f"| {f(m['wall_s_mean'], 3)} | {f(m['peak_mem_mb'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Accuracy vs search forward passes per method, drawn with PIL (no matplotlib needed)."""
    w, h, pad = 640, 420, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pts = [(n, m["search_fps_mean"] or 0.0, m["accuracy"]) for n, m in report["methods"].items()]
    xmax = max([p[1] for p in pts] + [1.0]) * 1.15
    d.line([(pad, h - pad), (w - pad // 2, h - pad)], fill="black")
    d.line([(pad, h - pad), (pad, pad // 2)], fill="black")
    d.text((w // 2 - 90, h - pad + 25), "search forward passes / question", fill="black")
    d.text((5, pad // 2 - 15), "accuracy (%)", fill="black")
    for k in range(6):
        y = h - pad - k * (h - 1.5 * pad) / 5
        d.text((pad - 30, y - 6), f"{20 * k}", fill="black")
        x = pad + k * (w - 1.5 * pad) / 5
        d.text((x - 8, h - pad + 6), f"{xmax * k / 5:.0f}", fill="black")
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for i, (name, x, acc) in enumerate(pts):
        px = pad + x / xmax * (w - 1.5 * pad)
        py = h - pad - acc * (h - 1.5 * pad)
        c = colors[i % len(colors)]
        d.ellipse((px - 5, py - 5, px + 5, py + 5), fill=c)
        d.text((px + 8, py - 8), f"{name} ({100 * acc:.1f})", fill=c)
    d.text((pad, 8), f"{report['benchmark']}, {report['answer_scheme']}", fill="black")
    img.save(path)
    return path


# ---------------------------------------------------------------------------------------------------- entry point


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """What ``focus eval`` runs."""

    methods: tuple[str, ...]
    benchmark: str
    data: Path | None
    report: Path
    limit: int | None = None
    seed: int = 0
    model: str | None = None
    scheme: str | None = None
    device: str = "cpu"
    attn: str | None = None  # None: eager if ViCrop is among the methods, else sdpa
    dtype: str | None = None
    zoomeye_depth: int | None = None
    vicrop_variant: str = "rel-att"
    vicrop_high: bool = False
    pipeline: str = "preset"  # FOCUS: the preset as it is, "paper" or "lean" (focus_tool.presets.pipeline_variant)
    command: str = ""
    progress: bool = True


# ---------------------------------------------------------------------------------------------------- run signature

_EDGE_BYTES: Final[int] = 1 << 20


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 over the weight files of a local checkpoint folder (None if it has none), cheap and clone-stable.

    Per file: its name, size, first and last MiB (mtimes differ between clones, a full hash of a 15 GB checkpoint
    costs minutes). A retrained checkpoint changes its tensors' bytes at both ends, so this catches it in practice;
    an edit confined to the middle of a large file would go unnoticed. ``focus_preset.json`` is hashed whole: the
    runner's FOCUS and ZoomEye read their settings from it.
    """
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_EDGE_BYTES))
            if size > _EDGE_BYTES:
                fh.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
                h.update(fh.read())
    preset_file = folder / "focus_preset.json"
    if preset_file.is_file():
        h.update(b"focus_preset.json\0" + preset_file.read_bytes())
    return h.hexdigest()


def run_signature(spec: EvalSpec, scheme: str, adapter: MLLMAdapter | None = None) -> dict[str, Any]:
    """What determines a per-item record besides the method and the item: the resume key of ``<report>.run.json``.

    The model is named as given (``--model``), or by the adapter's ``model_id`` when an adapter is passed in; the
    embedded model is called ``"embedded"`` and paths are not resolved, so a report resumes in another clone.
    Left out on purpose: the methods (adding one is a feature), device and attention kernel (the default kernel
    depends on the methods; numerics differ only in rounding), progress and the command line.
    """
    from focus_tool.adapters.registry import default_model_path

    name = adapter.model_id if adapter is not None else spec.model
    if name is None or Path(name) == default_model_path():
        name, folder = "embedded", default_model_path()
    else:
        folder = Path(name).expanduser()
    return {
        "model": name,
        "model_weights": weights_fingerprint(folder) if folder.is_dir() else None,
        "benchmark": spec.benchmark,
        "data": None if spec.data is None else str(spec.data),
        "seed": spec.seed,
        "limit": spec.limit,
        "scheme": scheme,
        "dtype": spec.dtype,
        "zoomeye_depth": spec.zoomeye_depth,
        "vicrop_variant": spec.vicrop_variant,
        "vicrop_high": spec.vicrop_high,
        **({"pipeline": spec.pipeline} if spec.pipeline != "preset" else {}),
    }


def check_signature(report: Path, signature: dict[str, Any]) -> bool:
    """Whether item records of an earlier run exist; they must stem from ``signature``.

    Raises:
        FocusError: records exist and ``<report>.run.json`` is missing, unreadable or names other settings.
    """
    if not _done_keys(report):
        return False
    items, sidecar = items_path(report), signature_path(report)
    fix = f"delete {items} (and any {report.stem}.items.rank*.jsonl) or use another --report path"
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        raise FocusError(f"{items} holds results without a readable run signature {sidecar.name}; {fix}")

    def shown(key: str, value: Any) -> str:  # a 64-digit hash would swamp the one-line message
        return json.dumps(value[:12] if key == "model_weights" and isinstance(value, str) else value)

    changed = [
        f"{k} {shown(k, stored.get(k))} -> {shown(k, signature.get(k))}"
        for k in sorted(set(stored) | set(signature))
        if stored.get(k) != signature.get(k)
    ]
    if changed:
        raise FocusError(f"{items} holds results of a different run (changed: {', '.join(changed)}); {fix}")
    return True


def _write_signature(report: Path, signature: dict[str, Any]) -> None:
    # tmp + rename: another rank (or a crash) never sees a half-written sidecar
    tmp = signature_path(report).with_suffix(".tmp")
    tmp.write_text(json.dumps(signature, indent=1) + "\n")
    tmp.replace(signature_path(report))


def _distributed() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier); accelerate's PartialState only when launched by torchrun / accelerate."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    try:
        from accelerate import PartialState
    except ImportError:
        raise FocusError("data-parallel runs need accelerate: pip install 'focus-tool[eval]'") from None
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state.wait_for_everyone


def run_eval(spec: EvalSpec, *, adapter: MLLMAdapter | None = None) -> dict[str, Any] | None:
    """Run ``spec``; returns the report on rank 0 (None on other ranks)."""
    from tqdm import tqdm

    rank, world, barrier = _distributed()
    scheme = spec.scheme or default_scheme(spec.benchmark, adapter.model_id if adapter is not None else spec.model)
    letter = scheme != "logit"
    spec.report.parent.mkdir(parents=True, exist_ok=True)
    # Every rank checks, before the model is loaded and before any record is written (the files cannot change under
    # the check), so all ranks refuse together instead of rank 0 alone leaving the others waiting at a barrier.
    # Only rank 0 writes the sidecar, and only when no records exist: no rank reads it then.
    signature = run_signature(spec, scheme, adapter)
    resumed = check_signature(spec.report, signature)
    if rank == 0 and not resumed:
        _write_signature(spec.report, signature)
    work = Path(tempfile.gettempdir()) / "focus-eval-data"  # synthetic split without --data: never in the repo
    if spec.benchmark == "synthetic" and rank == 0:
        load_benchmark(
            "synthetic",
            spec.data,
            shuffle_seed=spec.seed if letter else None,
            seed=spec.seed,
            limit=spec.limit,
            work_dir=work,
        )
    barrier()  # rank 0 wrote the synthetic files
    items = load_benchmark(
        spec.benchmark,
        spec.data,
        shuffle_seed=spec.seed if letter else None,
        seed=spec.seed,
        limit=spec.limit,
        work_dir=work,
    )
    if adapter is None:
        from focus_tool.adapters.registry import load_adapter

        kernels = {method_spec(name).attention for name in spec.methods}
        attn = spec.attn or ("eager" if "eager" in kernels else "sdpa")
        adapter = load_adapter(spec.model, device=spec.device, attn_implementation=attn, dtype=spec.dtype)
    if not isinstance(adapter.counter, RecordingCounter):
        adapter.counter = RecordingCounter()
    done = _done_keys(spec.report)
    shard = _shard_path(spec.report, rank)
    mine = items[rank::world]
    options = MethodOptions(
        pipeline=spec.pipeline,
        zoomeye_depth=spec.zoomeye_depth,
        vicrop_variant=spec.vicrop_variant,
        vicrop_high=spec.vicrop_high,
    )
    for name in spec.methods:
        method = build_method(name, adapter, options)
        todo = [it for it in mine if (name, it.item_id) not in done]
        bar = tqdm(todo, desc=f"{name} [{rank}/{world}]", disable=not spec.progress, file=sys.stderr)
        for item in bar:
            record = run_item(method, item, benchmark=spec.benchmark, scheme=scheme, device=spec.device)
            with shard.open("a") as f:
                f.write(json.dumps(record) + "\n")
    barrier()
    if rank != 0:
        return None
    records = _merge(spec.report, {it.item_id: i for i, it in enumerate(items)})
    wanted = {it.item_id for it in items}
    records = [r for r in records if r["item_id"] in wanted]
    # An earlier report's other methods are kept only when resuming under the same signature; after the items file
    # was deleted they would be results of another run.
    previous = json.loads(spec.report.read_text()) if resumed and spec.report.is_file() else {}
    methods = dict(previous.get("methods", {})) if previous.get("benchmark") == spec.benchmark else {}
    methods.update(summarize(records, benchmark=spec.benchmark, scheme=scheme))
    report = {
        "benchmark": spec.benchmark,
        "data": str(spec.data) if spec.data else f"generated (seed {spec.seed})",
        "seed": spec.seed,
        "limit": spec.limit,
        "model": spec.model or "embedded",
        "answer_scheme": scheme,
        "options_order": "shuffled per item (seeded)"
        if letter and spec.benchmark in ("vstar", "synthetic")
        else "as stored",
        "flops_formula": FLOPS_FORMULA,
        "peak_memory_kind": "CUDA max allocated" if spec.device.startswith("cuda") else "process peak RSS",
        "world_size": world,
        "command": spec.command,
        "methods": methods,
    }
    spec.report.write_text(json.dumps(report, indent=1))
    spec.report.with_suffix(".md").write_text(markdown(report))
    plot(report, spec.report.with_suffix(".png"))
    return report

"""The evaluation runner: method x benchmark -> per-item JSONL (resumable), JSON + Markdown report, PNG plot.

Efficiency accounting, the same for every method:
- forward passes counted at the adapter boundary per phase (search / answer / extraction), FOCUS App. A.2;
- prefill tokens summed over all calls of a question (decode steps not counted);
- analytic TFLOPs: for every counted sequence of n prefill tokens, ``L * (4 n d^2 + 2 n^2 d + 2 n d m)``
  multiply-accumulates (FastV / PyramidDrop formula as FOCUS uses it, paper App. C.4; FastV: arXiv 2403.06764), LLM
  only: the vision encoder and decode steps are excluded; batched calls are split evenly over their sequences;
- wall-clock per question (``time.perf_counter``, CUDA synchronised) and peak memory: CUDA max allocated when CUDA
  is used, else the process's peak RSS (``resource.getrusage``; monotonic over the process).

Items: every benchmark row is one independent item, run and scored on its own. On HR-Bench each row is one cyclic
option order of a question (docs/evaluation.md): the method, search included, runs once per row and nothing is shared
between the rows of a cyclic group (ZoomEye's and RAP's own scripts search once per question and answer the 4 orders
on the same crops; this harness does not); accuracy is averaged over the ``cycle_category`` groups as the official
scorer does (:func:`focus_tool.eval.benchmarks.accuracy_breakdown`).

Data-parallel: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) accelerate's ``PartialState`` (CPU: gloo)
gives each rank the items ``rank::N``; ranks append to their own shard file, rank 0 merges the shards into
``<report>.items.jsonl`` in item order and writes the report, so the result equals a one-process run.

Resume: items already in ``<report>.items.jsonl`` (or a rank shard) are skipped, keyed by (method, item id). Those
keys say nothing about the model or settings that produced a record, so ``<report>.run.json`` stores the run
signature (:func:`focus_tool.eval.signature.run_signature`) and a run whose signature differs from the stored one
is refused instead of mixing its records with the old ones. Methods are not in the signature (adding a method to a
report is a feature), their options that differ from the defaults are.

Views: while an item runs, its image and the method's result are written as a static HTML view,
``<report stem>_views/<method>/<item>.html`` (:func:`focus_tool.view.static_html`), and the report's end writes the
index ``<report stem>.html`` that lists the items worst and best first with a link to each view
(:mod:`focus_tool.eval.report`). Items resumed from an earlier run that wrote no view are listed without one.

Modules: records (:class:`~focus_tool.eval.records.ItemRecord` and its JSONL files), report (figures, Markdown,
plot), signature (:class:`~focus_tool.eval.signature.EvalSpec`, the resume guard), benchmarks (the table of
benchmarks: loader, prompt suffix, default scheme, scorer), accounting, scoring, methods.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, Method
from focus_tool.errors import FocusError
from focus_tool.eval.accounting import FLOPS_FORMULA, RecordingCounter, llm_dims, peak_mem_mb, tflops
from focus_tool.eval.benchmarks import benchmark_spec, load_benchmark
from focus_tool.eval.datasets import EvalItem
from focus_tool.eval.records import (
    EXTRA_KEYS,
    ItemRecord,
    append_record,
    done_keys,
    items_path,
    merge_records,
    shard_path,
)
from focus_tool.eval.report import (
    EVAL_VIEW_MAX_SIDE,
    current_entry,
    markdown,
    plot,
    summarize,
    view_path,
    write_index,
)
from focus_tool.eval.scoring import predicted_letter
from focus_tool.eval.signature import (
    EvalSpec,
    check_signature,
    options_of,
    run_signature,
    signature_path,
    weights_fingerprint,
    write_signature,
)
from focus_tool.methods import build_method, method_spec
from focus_tool.result import FocusResult

__all__ = [
    "EvalSpec",
    "default_scheme",
    "items_path",
    "run_eval",
    "run_item",
    "signature_path",
    "weights_fingerprint",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- one item


def default_scheme(benchmark: str, model: str | None = None) -> str:
    """The answer scheme used when none is given: the checkpoint preset's ``answer.scheme`` when it says "logit"
    (the embedded model cannot answer with letters), else the benchmark table's ``default_scheme``
    (:mod:`focus_tool.eval.benchmarks`: the official regex on MME-RealWorld, lenient letters elsewhere). Read from
    the checkpoint's ``focus_preset.json``, before the model is loaded.

    Raises:
        FocusError: no benchmark has that name.
    """
    from focus_tool.adapters.registry import default_model_path
    from focus_tool.presets import read_preset_file

    folder = default_model_path() if model is None else Path(model).expanduser()
    overrides = (read_preset_file(None, folder) or {}).get("overrides", {})
    if isinstance(overrides, dict) and overrides.get("answer.scheme") == "logit":
        return "logit"
    return benchmark_spec(benchmark).default_scheme


def run_item(
    method: Method,
    item: EvalItem,
    *,
    benchmark: str,
    scheme: str,
    device: str = "cpu",
    view: Path | None = None,
) -> ItemRecord:
    """Run one question and score it; returns the per-item record.

    With ``view``, the image and the method's result are also written there as a static HTML view (outside the
    timed call); a view that cannot be written is logged and skipped, the record is not lost for it.
    """
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
        image,
        question=item.question,
        options=list(item.options),
        scheme=answer_scheme,
        suffix=benchmark_spec(benchmark).suffix,
    )
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    if view is not None:
        _write_view(view, image, result)
    reply = result.answer or ""
    raw = json.loads(item.extra["raw_options"]) if "raw_options" in item.extra else None
    pred = predicted_letter(reply, item.options, scheme, raw)
    calls = list(counter.calls) if isinstance(counter, RecordingCounter) else []
    tf = tflops(calls, llm_dims(method.adapter)) if calls else None
    fp = result.forward_passes
    return ItemRecord(
        item_id=item.item_id,
        method=method.name,
        category=item.category,
        extra={k: v for k, v in item.extra.items() if k in EXTRA_KEYS},
        answer=item.answer_letter,
        pred=pred,
        reply=reply,
        correct=pred == item.answer_letter,
        search_fps=fp.search,
        answer_fps=fp.answer,
        extraction_fps=fp.extraction,
        prefill_tokens=result.prefill_tokens,
        phase_tokens=fp.tokens.model_dump(),
        phase_images=fp.images.model_dump(),
        phase_continuations=fp.continuations.model_dump(),
        tflops=None if tf is None else round(tf, 6),
        answer_boxes=[list(b) for b in result.answer_boxes],
        wall_s=round(wall, 4),
        peak_mem_mb=round(peak_mem_mb(device), 1),
    )


def _write_view(path: Path, image: Image.Image, result: FocusResult) -> None:
    """The item's static view (:func:`focus_tool.view.static_html`) at ``path``, or a warning when it cannot be."""
    from focus_tool.view import static_html

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(static_html(image, result, max_side=EVAL_VIEW_MAX_SIDE), encoding="utf-8")
    except (OSError, ValueError) as e:  # a view is a convenience: the run goes on without it
        logger.warning("no view written for %s: %s", path.name, e)


# ---------------------------------------------------------------------------------------------------- entry point


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
    bench = benchmark_spec(spec.benchmark)
    scheme = spec.scheme or default_scheme(spec.benchmark, adapter.model_id if adapter is not None else spec.model)
    letter = scheme != "logit"
    spec.report.parent.mkdir(parents=True, exist_ok=True)
    # Every rank checks, before the model is loaded and before any record is written (the files cannot change under
    # the check), so all ranks refuse together instead of rank 0 alone leaving the others waiting at a barrier.
    # Only rank 0 writes the sidecar, and only when no records exist: no rank reads it then.
    signature = run_signature(spec, scheme, adapter)
    resumed = check_signature(spec.report, signature)
    if rank == 0 and not resumed:
        write_signature(spec.report, signature)
    work = Path(tempfile.gettempdir()) / "focus-eval-data"  # synthetic split without --data: never in the repo
    if bench.writes_data and rank == 0:
        load_benchmark(
            spec.benchmark,
            spec.data,
            shuffle_seed=spec.seed if letter else None,
            seed=spec.seed,
            limit=spec.limit,
            work_dir=work,
        )
    barrier()  # rank 0 wrote the generated files
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
    done = done_keys(spec.report)
    shard = shard_path(spec.report, rank)
    mine = items[rank::world]
    for name, options in options_of(spec).items():
        method = build_method(name, adapter, options)
        todo = [it for it in mine if (name, it.item_id) not in done]
        bar = tqdm(todo, desc=f"{name} [{rank}/{world}]", disable=not spec.progress, file=sys.stderr)
        for item in bar:
            record = run_item(
                method,
                item,
                benchmark=spec.benchmark,
                scheme=scheme,
                device=spec.device,
                view=view_path(spec.report, name, item.item_id),
            )
            append_record(shard, record)
    barrier()
    if rank != 0:
        return None
    records = merge_records(spec.report, {it.item_id: i for i, it in enumerate(items)})
    wanted = {it.item_id for it in items}
    records = [r for r in records if r.item_id in wanted]
    # An earlier report's other methods are kept only when resuming under the same signature; after the items file
    # was deleted they would be results of another run.
    previous = json.loads(spec.report.read_text()) if resumed and spec.report.is_file() else {}
    kept = previous.get("methods", {}) if previous.get("benchmark") == spec.benchmark else {}
    methods = {name: current_entry(entry) for name, entry in kept.items()}
    methods.update(summarize(records, benchmark=spec.benchmark, scheme=scheme))
    report = {
        "benchmark": spec.benchmark,
        "data": str(spec.data) if spec.data else f"generated (seed {spec.seed})",
        "seed": spec.seed,
        "limit": spec.limit,
        "model": spec.model or "embedded",
        "answer_scheme": scheme,
        "options_order": "shuffled per item (seeded)" if letter and bench.shuffles_options else "as stored",
        "flops_formula": FLOPS_FORMULA,
        "peak_memory_kind": "CUDA max allocated" if spec.device.startswith("cuda") else "process peak RSS",
        "world_size": world,
        "command": spec.command,
        "methods": methods,
    }
    spec.report.write_text(json.dumps(report, indent=1))
    spec.report.with_suffix(".md").write_text(markdown(report))
    plot(report, spec.report.with_suffix(".png"))
    write_index(report, spec.report, records, {it.item_id: it for it in items})
    return report

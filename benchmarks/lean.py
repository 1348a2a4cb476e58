"""Lean FOCUS against the paper's pipeline, side by side on the same synthetic questions (issue 15).

    python benchmarks/lean.py --seed 0 --n 300 --out benchmarks/results/lean    # the committed table
    python benchmarks/lean.py --split validation --grid                         # how the thresholds were chosen

Every method answers every question in turn (so machine load is shared) with V* logit matching, on the embedded
model with its preset; the methods are variants of that preset (``focus_tool.presets.pipeline_variant``):
- ``vanilla``: the whole image, one prefill per option (the reference the wall ratio divides by);
- ``paper``: the paper's pipeline: n_steps ROIs scored (+ overrun), the argmax answered even when below the
  found threshold, one prefill per option;
- ``lean``: adaptive ranking (the first ROI alone when it is a confident Yes on a clear map), options scored on
  one prefill, nothing selected below the found threshold;
- ``no_ranking``: the paper's pipeline with n_steps = 1 and no overrun (the top-anchor ROI, no existence pass);
- ``paper_random`` / ``lean_random``: both on a random map; ``paper_unclamped`` / ``lean_unclamped``: both on the
  map of the paper's formula without the preset's clamp.
Per method: accuracy, passes per phase (search, answer, extraction: sequences from an empty cache), prompt tokens
actually computed (a continuation of a cached prefix counts only its own tokens), encoded images, TFLOPs from those
tokens (``focus_tool.eval.runner.FLOPS_FORMULA``) and wall time relative to vanilla. Writes ``OUT/<name>.json``
(the schema of ``benchmarks/compare.py``'s report, read by ``benchmarks/cost_real_dims.py``), ``.md`` and the
per-item ``.items.jsonl``.

``--split validation`` draws the questions from the validation stream (``focus_tool.data.synthetic.
VALIDATION_STREAM``), disjoint from the test split; ``--grid`` adds lean variants over a grid of thresholds there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from focus_tool.adapters.registry import load_adapter
from focus_tool.config import FocusConfig
from focus_tool.data import synthetic as syn
from focus_tool.eval.accounting import FLOPS_FORMULA, RecordingCounter, llm_dims, tflops
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for, pipeline_variant

PHASES = ("search", "answer", "extraction")


def _with(cfg: FocusConfig, **groups: dict[str, Any]) -> FocusConfig:
    for group, fields in groups.items():
        cfg = dataclasses.replace(cfg, **{group: dataclasses.replace(getattr(cfg, group), **fields)})
    return cfg


def methods(base: FocusConfig, grid: bool) -> dict[str, FocusConfig]:
    """The compared variants of the checkpoint's preset ``base``."""
    paper, lean = pipeline_variant(base, "paper"), pipeline_variant(base, "lean")
    out = {
        "vanilla": paper,
        "paper": paper,
        "lean": lean,
        "no_ranking": _with(paper, rank={"n_steps": 1, "overrun": False}),
        "paper_random": _with(paper, relevance={"map_source": "random"}),
        "lean_random": _with(lean, relevance={"map_source": "random"}),
        "paper_unclamped": _with(paper, relevance={"clamp_similarity": False}),
        "lean_unclamped": _with(lean, relevance={"clamp_similarity": False}),
    }
    if grid:
        for acc in (0.5, 0.9, 0.97):
            for amb in (0.5, 0.8, 1.01):
                for flat in (2.0,):
                    name = f"lean_a{acc}_r{amb}_f{flat}"
                    rank = {"accept_conf": acc, "ambiguity_ratio": amb, "flat_peak": flat}
                    out[name] = _with(lean, rank=rank)
                    out[name + "_random"] = _with(lean, rank=rank, relevance={"map_source": "random"})
                    out[name + "_unclamped"] = _with(lean, rank=rank, relevance={"clamp_similarity": False})
    return out


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    adapter = load_adapter(args.model)
    adapter.counter = RecordingCounter()
    base = config_for(adapter, args.model)
    base = _with(base, answer={"scheme": "logit"})
    variants = methods(base, args.grid)
    if args.methods:
        variants = {k: v for k, v in variants.items() if k in args.methods.split(",")}
    pipes = {k: FocusPipeline(adapter, v) for k, v in variants.items()}
    stream = syn.VALIDATION_STREAM if args.split == "validation" else syn.TEST_STREAM
    items = syn.benchmark_items(args.seed, args.n, stream=stream)
    dims = llm_dims(adapter)
    records: list[dict[str, Any]] = []
    for idx, item in enumerate(tqdm(items, desc=f"lean {args.split} seed {args.seed}", unit="q")):
        q = item.question
        image = syn.render(item.scene)
        rng = np.random.default_rng([args.seed, idx])
        options = list(q.options)
        rng.shuffle(options)
        for name, pipe in pipes.items():
            adapter.counter.calls.clear()
            t0 = time.perf_counter()
            if name == "vanilla":
                res = pipe.vanilla(image, question=q.text, options=options)
            else:
                res = pipe.zoom(image, question=q.text, options=options)
            wall = time.perf_counter() - t0
            fp = res.forward_passes
            status = res.status
            records.append(
                {
                    "item_id": item.item_id,
                    "method": name,
                    "category": q.kind,
                    "correct": res.answer == q.options[0],
                    "search_fps": fp.search,
                    "answer_fps": fp.answer,
                    "extraction_fps": fp.extraction,
                    "phase_tokens": fp.tokens.model_dump(),
                    "phase_images": fp.images.model_dump(),
                    "phase_continuations": fp.continuations.model_dump(),
                    "prefill_tokens": sum(fp.tokens.model_dump().values()),
                    "tflops": tflops(adapter.counter.calls, dims),
                    "wall_s": wall,
                    "found": None
                    if status is None or not status.targets or any(t.state == "unverified" for t in status.targets)
                    else all(t.state in ("found", "ambiguous") for t in status.targets),
                    "question_status": None if status is None else status.question,
                }
            )
    return summarise(records), records


def _mean(rs: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rs]))


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-method means in the schema of ``benchmarks/compare.py``'s report."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == name]
        found = [r["found"] for r in rs if r["found"] is not None]
        out[name] = {
            "accuracy": round(_mean(rs, "correct"), 6),
            "n": len(rs),
            "answer_scheme": "logit",
            "search_fps_mean": round(_mean(rs, "search_fps"), 4),
            "answer_fps_mean": round(_mean(rs, "answer_fps"), 4),
            "extraction_fps_mean": round(_mean(rs, "extraction_fps"), 4),
            "prefill_tokens_mean": round(_mean(rs, "prefill_tokens"), 2),
            **{
                f"{key}_mean": {p: round(float(np.mean([r[key][p] for r in rs])), 4) for p in PHASES}
                for key in ("phase_tokens", "phase_images", "phase_continuations")
            },
            "tflops_mean": round(_mean(rs, "tflops"), 7),
            "wall_s_mean": round(_mean(rs, "wall_s"), 5),
            "peak_mem_mb": None,
            "found_rate": round(float(np.mean(found)), 4) if found else None,
            "breakdown": {
                "per_category": {
                    k: round(_mean([r for r in rs if r["category"] == k], "correct"), 4) for k in syn.KINDS
                }
            },
        }
    return out


def _extraction_fps(m: dict[str, Any]) -> float:
    """A method's mean extraction passes; reports written before the rename (the committed ones) say ``aux``."""
    return float(m["extraction_fps_mean"] if "extraction_fps_mean" in m else m["aux_fps_mean"])


def table(report: dict[str, Any]) -> str:
    """Markdown: accuracy, passes per phase, tokens, TFLOPs, wall ratio to vanilla."""
    methods_ = report["methods"]
    base = methods_.get("vanilla", {}).get("wall_s_mean")
    paper_tokens = methods_.get("paper", {}).get("prefill_tokens_mean")
    rows = [
        "| method | accuracy % | search FPs | answer FPs | search + answer | extraction FPs | prefill tokens | "
        "tokens / paper | TFLOPs | wall / vanilla | found % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods_.items():
        sa = m["search_fps_mean"] + m["answer_fps_mean"]
        ratio = f"{m['wall_s_mean'] / base:.2f}" if base else "-"
        tok = f"{m['prefill_tokens_mean'] / paper_tokens:.2f}" if paper_tokens else "-"
        found = "-" if m["found_rate"] is None else f"{100 * m['found_rate']:.1f}"
        rows.append(
            f"| {name} | {100 * m['accuracy']:.2f} | {m['search_fps_mean']:.2f} | {m['answer_fps_mean']:.2f} | "
            f"{sa:.2f} | {_extraction_fps(m):.2f} | {m['prefill_tokens_mean']:.0f} | {tok} | {m['tflops_mean']:.5f} "
            f"| {ratio} | {found} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument("--grid", action="store_true", help="lean variants over a grid of thresholds")
    p.add_argument("--methods", default="", help="comma-separated subset of the methods")
    p.add_argument("--name", default=None, help="file stem (default: <split>_seed<seed>)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lean"))
    args = p.parse_args(argv)
    command = shlex.join(["python", "benchmarks/lean.py", *(argv if argv is not None else sys.argv[1:])])
    t0 = time.time()
    summary, records = run(args)
    report = {
        "benchmark": "synthetic",
        "split": args.split,
        "seed": args.seed,
        "limit": args.n,
        "model": args.model or "focus_tool/embedded/model",
        "answer_scheme": "logit",
        "flops_formula": FLOPS_FORMULA,
        "command": command,
        "wall_s_total": round(time.time() - t0, 1),
        "methods": summary,
    }
    name = args.name or f"{args.split}_seed{args.seed}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    with (args.out / f"{name}.items.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    text = table(report)
    md = (
        f"# Lean FOCUS vs the paper's pipeline ({args.split} split, seed {args.seed}, {args.n} questions)\n\n"
        f"- command: `{command}`\n- model: `{report['model']}`; V* logit matching; chance 31.25 %\n"
        "- passes: sequences run from an empty cache (the paper's FPs); options scored as continuations of one "
        "prefill are tokens, not passes\n- prefill tokens: prompt tokens actually computed per question\n"
        f"- TFLOPs: {FLOPS_FORMULA}\n\n" + text
    )
    (args.out / f"{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

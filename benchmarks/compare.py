"""All four methods (vanilla, FOCUS, ZoomEye, ViCrop) on the same model and data in one run.

    python benchmarks/compare.py --model focus_tool/embedded/model --benchmark synthetic --limit 200 --seed 0 \\
        --name embedded_synthetic

Loads the model once with eager attention (ViCrop needs it; the other methods give the same numbers under any
kernel), runs ``focus_tool.eval.runner.run_eval`` for every method (resumable), prints a table of accuracy,
forward passes per question, wall-time ratio to vanilla and peak memory, and writes ``<out>/<name>.json`` + ``.md``
(with the command line), plus the per-item JSONL and the PNG plot; ``--out`` defaults to ``benchmarks/results``.
``--scheme`` is the answer scheme of every method (``logit``: V* logit matching, one pass per option; the letter
schemes: options shown as letters, one generated reply; default: lenient letters, MME's regex on MME-RealWorld).
Peak memory on CPU is the process's peak RSS, monotonic over the run: methods run in the order given, so a later
method's figure includes the earlier ones' peaks.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from focus_tool.adapters.registry import load_adapter
from focus_tool.eval.benchmarks import benchmark_names
from focus_tool.eval.runner import EvalSpec, run_eval
from focus_tool.methods import method_names

RESULTS = Path(__file__).resolve().parent / "results"


def table(report: dict) -> str:
    """Markdown comparison table; wall ratio relative to vanilla."""
    methods = report["methods"]
    base = (methods.get("vanilla") or {}).get("wall_s_mean")
    rows = [
        "| method | n | accuracy (%) | search FPs / q | answer FPs / q | TFLOPs / q | wall / vanilla | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        ratio = f"{m['wall_s_mean'] / base:.2f}" if base else "-"
        tf = "-" if m["tflops_mean"] is None else f"{m['tflops_mean']:.3g}"
        rows.append(
            f"| {name} | {m['n']} | {100 * m['accuracy']:.2f} | {m['search_fps_mean']:.2f} | "
            f"{m['answer_fps_mean']:.2f} | {tf} | {ratio} | {m['peak_mem_mb']:.0f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--benchmark", default="synthetic", choices=benchmark_names())
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheme", default=None, choices=["logit", "letter-strict", "letter-lenient", "mme-regex"])
    p.add_argument("--methods", default=",".join(("vanilla", "focus", "zoomeye", "vicrop")))
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default=None, help="results file stem (default: <benchmark>_seed<seed>)")
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder (default: benchmarks/results)")
    args = p.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(","))
    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {known}")
    name = args.name or f"{args.benchmark}_seed{args.seed}"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, "benchmarks/compare.py", *(argv or sys.argv[1:])])
    adapter = load_adapter(args.model, device=args.device, attn_implementation="eager")
    report = run_eval(
        EvalSpec(
            methods=methods,
            benchmark=args.benchmark,
            data=args.data,
            report=out / f"{name}.json",
            limit=args.limit,
            seed=args.seed,
            model=args.model,
            scheme=args.scheme,
            device=args.device,
            attn="eager",
            command=command,
        ),
        adapter=adapter,
    )
    if report is None:
        return 0
    text = table(report)
    md = out / f"{name}.md"
    md.write_text(md.read_text() + "\n## Comparison\n\n" + text)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    print(f"command: {command}")
    print(f"answer scheme: {report['answer_scheme']}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

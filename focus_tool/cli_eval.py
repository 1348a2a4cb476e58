"""``focus eval``: one method on one benchmark, its method options and its default report name.

Part of the command line (:mod:`focus_tool.cli` builds the parser and re-exports these); nothing here imports torch
until a run starts.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from focus_tool.devices import resolve_device

EVAL_DIR = Path("focus-eval")  # focus eval's default report folder, relative to the current folder (git-ignored)


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def cmd_eval(args: argparse.Namespace) -> int:
    """focus eval: one method on one benchmark -> JSON + Markdown report, per-item JSONL, PNG plot."""
    from focus_tool.eval.runner import EvalSpec, run_eval

    report_path = args.report if args.report is not None else default_report(args)
    report = run_eval(
        EvalSpec(
            methods=(args.method,),
            benchmark=args.benchmark,
            data=args.data,
            report=report_path,
            limit=args.limit,
            seed=args.seed,
            model=args.model,
            scheme=args.scheme,
            device=resolve_device(args.device),
            attn=args.attn,
            method_options={args.method: eval_method_options(args)},
            command=" ".join(["focus", *sys.argv[1:]]),
            progress=not (args.no_progress or args.quiet),
        )
    )
    if report is not None:
        m = report["methods"][args.method]
        _out(
            f"{args.method} on {args.benchmark}: accuracy {100 * m['accuracy']:.2f} (n={m['n']}, "
            f"{m['answer_scheme']}); search FPs {m['search_fps_mean']}, answer FPs {m['answer_fps_mean']}; "
            f"report {report_path} (also .md, .png, .items.jsonl)"
        )
    return 0


def eval_method_options(args: argparse.Namespace) -> object:
    """The eval method's options: ``--pipeline`` (an alias), then each ``--method-option`` (a later one wins)."""
    from focus_tool.methods import parse_method_options

    pairs = [f"pipeline={args.pipeline}"] if args.pipeline is not None else []
    return parse_method_options(args.method, [*pairs, *args.method_option])


def default_report(args: argparse.Namespace) -> Path:
    """Where ``focus eval`` writes without ``--report``: ``focus-eval/<method>_<benchmark>[_<settings>].json``.

    The settings that make a run's records differ (``--limit``, ``--seed``, ``--model``, ...) are in the name when
    they are not the defaults, so a rerun with other settings gets its own report instead of a refused resume.
    ``focus-eval/`` is in .gitignore.
    """
    parts: list[str] = [args.method, args.benchmark]
    if args.data is not None:
        parts.append(Path(args.data).name)
    if args.model is not None:
        parts.append(Path(args.model).name)
    if args.limit is not None:
        parts.append(f"n{args.limit}")
    if args.seed != 0:
        parts.append(f"seed{args.seed}")
    from focus_tool.methods import option_labels

    parts.extend(option_labels(eval_method_options(args)))
    if args.scheme is not None:
        parts.append(args.scheme)
    name = "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", p).strip("-.") or "x" for p in parts)
    return EVAL_DIR / f"{name}.json"

"""The ``focus`` command line: a thin table over library functions.

Expected failures (bad image, empty question, missing model, ...) print one line ``focus: error: ...`` to stderr
and exit with code 2; the traceback goes to the log only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from focus_tool.cli_eval import EVAL_DIR, cmd_eval
from focus_tool.config import PIPELINES
from focus_tool.devices import DEFAULT_DEVICE, DEVICE_CHOICES, resolve_device
from focus_tool.errors import FocusError, quote_text
from focus_tool.plugins import load_plugins

if TYPE_CHECKING:
    from focus_tool.pipeline import FocusPipeline

logger = logging.getLogger("focus_tool.cli")

DEVICE_HELP = "where to run the model (default auto: cuda if PyTorch sees a GPU, else mps, else cpu)"

EPILOG = """examples (the embedded model knows only its synthetic world of coloured cards with dots):
  focus demo                                   generate a fine-grained image, compare vanilla and FOCUS
  focus zoom photo.jpg --question "What is the color of the dots on the red card?" --overlay out.png
  focus zoom photo.jpg --target "red card" --json
  focus zoom photo.jpg -q "What is written on the sign?" --model llava-hf/llava-1.5-7b-hf --device cuda
  focus serve --allowed-root ~/Pictures         MCP server on stdio (add --transport streamable-http for HTTP)
  focus eval --method focus --benchmark synthetic --limit 40    report: focus-eval/focus_synthetic_n40.json
  focus eval --method zoomeye --benchmark vstar --data ~/vstar_bench --report runs/zoomeye.json
"""


def _out(text: str) -> None:
    """The CLI's one output channel (stdout)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _version() -> str:
    """The installed package version (``importlib.metadata``), or a note when running from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("focus-tool")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the embedded demo model)")
    p.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICE_CHOICES, help=DEVICE_HELP)
    p.add_argument(
        "--attn",
        default="sdpa",
        choices=["sdpa", "eager", "flash_attention_2"],
        help="attention kernel (FOCUS never needs attention weights; flash_attention_2 falls back to sdpa "
        "when flash-attn is not installed)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float16", "bfloat16"],
        help="model weights dtype (default float32; the map math always runs in float32)",
    )


def _pipeline(args: argparse.Namespace) -> FocusPipeline:
    from focus_tool.pipeline import FocusPipeline

    return FocusPipeline.from_pretrained(
        args.model,
        device=resolve_device(args.device),
        attn_implementation=args.attn,
        dtype=getattr(args, "dtype", None),
        pipeline=getattr(args, "pipeline", "preset"),
    )


def cmd_zoom(args: argparse.Namespace) -> int:
    """focus zoom: run FOCUS on one image."""
    from focus_tool.inputs import AdmittedImage, check_output_path, check_text, load_image, parse_options
    from focus_tool.render import overlay

    if args.question is None and args.target is None:
        raise FocusError("give --question Q or --target T")
    if args.top < 0:
        raise FocusError(f"--top must be 0 or more regions per target, got {args.top}")
    image = load_image(args.image)  # validate before loading the model
    if args.overlay is not None:  # before the model runs: a directory, unwritable, existing or the input itself
        check_output_path(args.overlay, inputs=(args.image,), force=args.force)
    if args.html is not None:  # the same checks for the HTML view
        check_output_path(args.html, inputs=(args.image,), force=args.force, flag="--html", suffix=".html")
    options = parse_options(args.options)
    for text, what in ((args.question, "question"), (args.target, "target")):
        if text is not None:
            check_text(text, what)  # the pipeline checks again; here so that nothing waits for the model
    pipe = _pipeline(args)
    result = pipe.zoom(AdmittedImage(image), question=args.question, target=args.target, options=options)
    if args.overlay is not None:
        args.overlay.parent.mkdir(parents=True, exist_ok=True)
        overlay(image, result, style=args.overlay_style, show_unscored=args.overlay_unscored).save(args.overlay)
    if args.html is not None:
        from focus_tool.view import static_html

        args.html.write_text(static_html(image, result), encoding="utf-8")
    if args.json:
        _out(result.model_dump_json(indent=1))
        return 0
    status = result.status
    if result.question:
        _out(f"question: {result.question}")
        basis = {"answered_on_region": "on the selected region", "answered_on_whole_image": "on the WHOLE image"}
        where = basis.get(status.question, "") if status is not None else ""
        _out(f"answer:   {result.answer}" + (f"   ({where})" if where else ""))
        if result.answer_evidence is not None:
            _out(f"          {result.answer_evidence.line()}")
    _out(f"targets:  {', '.join(result.targets) or '(none)'}")
    if status is not None:
        for t in status.targets:
            conf = "" if t.confidence is None else f", P(yes) {t.confidence:.3f} vs threshold {t.threshold}"
            _out(f"  {t.target}: {t.state.replace('_', ' ').upper()}{conf}")
        for w in status.warnings:
            _out(f"warning ({w.code}): {w.message}")
    listed: dict[str, int] = {}  # regions listed per target: --top N is N for each target
    for r in result.regions:
        listed[r.target] = listed.get(r.target, 0) + 1
        if listed[r.target] > args.top:
            continue
        conf = "  -  " if r.confidence is None else f"{r.confidence:.3f}"
        mark = " *" if r.selected else ""
        _out(f"  {r.id:>4} {r.target:<20} box={list(r.box)} P(yes)={conf}{mark}")
    fp = result.forward_passes
    _out(
        f"forward passes: search {fp.search}, answer {fp.answer}, extraction {fp.extraction}; "
        f"prefill tokens {result.prefill_tokens}"
    )
    if args.overlay is not None:
        _out(f"overlay:  {args.overlay}")
    if args.html is not None:
        _out(f"html:     {args.html}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """focus models: the supported architectures and their presets."""
    from focus_tool.adapters.registry import default_model_path, supported_architectures
    from focus_tool.presets import PRESETS
    from focus_tool.world import describe, read_world

    _out(f"{'model_type':<17} {'transformers class':<40} {'preset':<16} settings")
    for mtype, hf_class, name in supported_architectures():
        cfg = PRESETS[name]
        rel, prop = cfg.relevance, cfg.proposal
        settings = (
            f"layers {f'[{rel.layers[0]}, {rel.layers[1]})' if rel.layers else '[O//2, O)'} smooth {rel.smooth_sigma} "
            f"down {rel.downsample} k {prop.k} s {prop.s_min}..{prop.s_max} s_dist {prop.s_dist} "
            f"t_type2 {cfg.rank.t_type2}"
        )
        _out(f"{mtype:<17} {hf_class:<40} {name:<16} {settings}")
    _out("a checkpoint's focus_preset.json overrides its preset; layers past the model depth fall back to [O//2, O)")
    _out(f"default model: {default_model_path()}")
    _out(describe(read_world(default_model_path()), str(default_model_path()), subject="The default model"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """focus demo: one synthetic fine-grained image, vanilla vs FOCUS."""
    from focus_tool.demo import run_demo

    return run_demo(
        seed=args.seed,
        out_dir=args.out,
        model=args.model,
        write=_out,
        tally=args.tally,
        overlay_style=args.overlay_style,
    )


def cmd_train(args: argparse.Namespace) -> int:
    """focus train-embedded: train the embedded model (see focus_tool/embedded/train.py)."""
    from focus_tool.embedded.train import main as train_main

    rest = [
        "--out",
        str(args.out),
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--aux",
        args.aux,
        "--threads",
        str(args.threads),
    ]
    if args.quiet:
        rest.append("--no-progress")
    return train_main(rest)


def cmd_serve(args: argparse.Namespace) -> int:
    """focus serve: the MCP server (mcp_server.__main__), configured by the same flags."""
    from mcp_server.__main__ import run
    from mcp_server.settings import settings_from_args

    run(settings_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``focus``."""
    parser = argparse.ArgumentParser(
        prog="focus",
        description="focus-tool: zoom into the small details of an image with a multimodal LLM (FOCUS, NeurIPS 2025). "
        "It finds where the objects of a question are from the model's own KV cache, ranks crops by the model's "
        "confidence, and answers on the best crop.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log progress and tracebacks to stderr")
    noise.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars and no log lines below ERROR (results and errors are still printed); "
        "goes before the command: `focus -q eval ...` (after `zoom`, -q is --question)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    z = sub.add_parser(
        "zoom",
        help="find the relevant regions of an image (and answer a question on them)",
        description="Run FOCUS on IMAGE: target extraction, V-V relevance map from the KV cache, "
        "region proposals, ranking by P(Yes), answer on the best region.",
    )
    z.add_argument("image", help="path of the image (PNG, JPEG, WebP, ...)")
    g = z.add_mutually_exclusive_group()
    g.add_argument("-q", "--question", help="question about a detail of the image")
    g.add_argument("-t", "--target", help="object to find, e.g. 'red card' (no question, no answer)")
    z.add_argument("--options", help="multiple-choice options separated by '|', e.g. 'white|black|cyan|pink'")
    _add_model_args(z)
    z.add_argument(
        "--json", action="store_true", help="print the result as JSON (schema: focus_tool.result.FocusResult)"
    )
    z.add_argument("--overlay", type=Path, help="write a PNG with the relevance map and the ranked boxes")
    z.add_argument(
        "--overlay-style",
        choices=["heat", "outline"],
        default="heat",
        help="heat: the relevance map blended under the boxes (default); outline: the boxes alone on the image",
    )
    z.add_argument(
        "--overlay-unscored",
        action="store_true",
        help="also draw the regions no existence check scored (hidden by default)",
    )
    z.add_argument(
        "--html",
        type=Path,
        help="write a self-contained HTML view (no network): the image, the ranked boxes, the relevance map as a "
        "layer, the answer, its confidence and the status",
    )
    z.add_argument(
        "--force", action="store_true", help="let --overlay / --html replace an existing file (never the input image)"
    )
    z.add_argument("--top", type=int, default=5, help="regions to list per target in the text output (default 5)")
    z.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="preset",
        help="the checkpoint's preset (default; lean FOCUS on the embedded model), the paper's pipeline (paper), "
        "or lean FOCUS (lean): docs/method.md",
    )
    z.set_defaults(func=cmd_zoom)

    m = sub.add_parser(
        "models",
        help="list the supported model architectures and their presets",
        description="List the checkpoint architectures (config.json model_type) focus-tool runs, with the preset "
        "each one uses.",
    )
    m.set_defaults(func=cmd_models)

    d = sub.add_parser(
        "demo",
        help="generate a fine-grained image and compare vanilla with FOCUS",
        description="Generate one synthetic fine-grained image, answer its question on the whole "
        "image (vanilla) and with FOCUS, print both and write the overlay PNG.",
    )
    d.add_argument("--seed", type=int, default=0, help="which demo image (default 0)")
    d.add_argument("--out", type=Path, default=Path("focus-demo"), help="folder for the image and overlay")
    d.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    d.add_argument(
        "--overlay-style",
        choices=["heat", "outline"],
        default="heat",
        help="heat: the relevance map under the boxes (default); outline: the boxes alone",
    )
    d.add_argument(
        "--tally",
        type=int,
        default=10,
        help="also answer the next N demo images and print how often each method was right (default 10; 0: off)",
    )
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser(
        "train-embedded",
        help="train the embedded demo model from scratch (CPU, ~80 min)",
        description="Train the embedded LLaVA on the synthetic world; resumable from --out.",
    )
    t.add_argument("--out", type=Path, default=Path("runs/embedded"))
    t.add_argument("--steps", type=int, default=4500, help="all steps, the last 1000 the second stage")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--aux", choices=["hinge", "tied", "tied-cls", "untied", "none"], default="hinge")
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(func=cmd_train)

    from focus_tool.eval.benchmarks import benchmark_names
    from focus_tool.methods import method_names

    e = sub.add_parser(
        "eval",
        help=f"evaluate a method ({', '.join(method_names())}) on a benchmark",
        description="Run one method on a benchmark read from a local path (or the seeded synthetic split): "
        "resumable per-item JSONL next to the report (a rerun with another model or settings is refused), JSON + "
        "Markdown report, PNG plot. Data-parallel with "
        "`torchrun --nproc_per_node N -m focus_tool.cli eval ...`.",
    )
    e.add_argument("--method", required=True, choices=method_names())
    e.add_argument("--benchmark", required=True, choices=benchmark_names())
    e.add_argument("--data", type=Path, help="local benchmark file or folder (synthetic: where to write the split)")
    e.add_argument("--limit", type=int, default=None, help="first N items (synthetic: split size, default 200)")
    e.add_argument("--seed", type=int, default=0, help="synthetic split and option-shuffle seed")
    e.add_argument(
        "--report",
        type=Path,
        default=None,
        help="the JSON report (also .md, .png, .items.jsonl, .run.json); default: METHOD_BENCHMARK[_SETTINGS].json "
        f"in {EVAL_DIR}/ of the current folder",
    )
    e.add_argument(
        "--scheme",
        choices=["logit", "letter-strict", "letter-lenient", "mme-regex"],
        help="answer scheme (default: the checkpoint preset's when it is logit, as the embedded model's; else "
        "mme-regex on mme-rw-lite, letter-lenient elsewhere)",
    )
    e.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the chosen method, converted by its type (repeatable); focus: pipeline; zoomeye: depth "
        "(tree depth limit, default: the preset's); vicrop: variant (rel-att or grad-att), high (true: one map per "
        "1024-px block); an unknown KEY is refused with the method's valid ones (docs/evaluation.md)",
    )
    e.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default=None,
        help="FOCUS as the checkpoint's preset has it (preset, the default; lean on the embedded model), the paper's "
        "pipeline (paper), or lean FOCUS (lean); the same as --method-option pipeline=...; see docs/method.md",
    )
    e.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the embedded model)")
    e.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICE_CHOICES, help=DEVICE_HELP)
    e.add_argument(
        "--attn", default=None, choices=["sdpa", "eager", "flash_attention_2"], help="default: eager for vicrop"
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    from mcp_server.settings import add_server_arguments

    s = sub.add_parser(
        "serve",
        help="run the MCP server (stdio for desktop hosts, or --transport streamable-http)",
        description="Serve focus_zoom / focus_find over MCP; the same as `focus-mcp` and `python -m mcp_server`. "
        "Needs the mcp extra: `pip install 'focus-tool[mcp]'`.",
    )
    add_server_arguments(s)
    s.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``focus``; returns the process exit code."""
    try:
        load_plugins()  # before the parser: a plugin's methods are --method choices
    except FocusError as e:
        sys.stderr.write(f"focus: error: {e}\n")
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR if quiet else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except FocusError as e:
        logger.debug("expected failure", exc_info=True)
        sys.stderr.write(f"focus: error: {e}\n")
        return 2
    except OSError as e:  # the environment (disk full, a file gone mid-run): one line, the traceback with --verbose
        logger.debug("OS error", exc_info=True)
        where = f" ({quote_text(str(e.filename), 200)})" if e.filename else ""
        sys.stderr.write(f"focus: error: {e.strerror or type(e).__name__}{where}; check the file and retry\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("focus: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

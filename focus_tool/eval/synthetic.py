"""Measure FOCUS on the synthetic benchmark with one command (issue: embedded model acceptance checks).

    python -m focus_tool.eval.synthetic --model focus_tool/embedded/model --n 300 --out benchmarks/results/embedded

``--split validation`` draws the questions from the validation stream instead of the test split and adds the choice
of the low-confidence threshold (:func:`focus_tool.eval.reliability.choose_low_confidence`) to the report.

Per question (fixed-seed test split, options shuffled per item with a seeded RNG), under the preset's answer
scheme (``--scheme`` overrides): ``letter`` = lettered options, first letter of the reply must match (strict);
``logit`` = V* logit matching, the option with the highest mean log-probability as the reply to the bare question:
- vanilla: answer on the whole image;
- oracle: answer on a crop around the ground-truth box(es) (their union, grown 3x about its centre);
- focus: the full pipeline (target extraction included) with the checkpoint's preset;
- pointing: argmax cell of the map inside or touching the ground-truth box, per LM layer, for the preset's
  layer range, and for a vision-only baseline (cosine of projector outputs with the object word's input embedding);
- coverage: the selected region covers >= 50 % of the ground-truth box;
- existence AUROC: P(Yes) on crops (the size FOCUS uses) with vs without the target;
- answer evidence: how often FOCUS answered on a region, and its accuracy against its answer confidence (reliability
  table, expected calibration error, ``reliability.png``).
With ``--ablations``: n_steps = 1 without overrun, random map, K-K without RoPE, every single layer,
and an exhaustive sliding-window search ranked by P(Yes) with no map; the random map without ranking and, when the
preset clamps negative similarities, the unclamped map with and without ranking (what the ranking adds on maps
whose first region is often wrong).
Results go to ``OUT/report.json`` and ``OUT/report.md``; per-item records to ``OUT/items.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.config import FocusConfig
from focus_tool.data import synthetic as syn
from focus_tool.eval.reliability import (
    choose_low_confidence,
    evidence_markdown,
    expected_calibration_error,
    plot_reliability,
    reliability_table,
)
from focus_tool.eval.scoring import Scheme, predicted_letter
from focus_tool.grid import PatchGrid
from focus_tool.ops.boxes import box_coverage, box_intersection
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from focus_tool.prompts import LETTERS, existence_prompt
from focus_tool.steps.answer import crop
from focus_tool.steps.relevance import relevance_map, to_grid

logger = logging.getLogger(__name__)


def auroc(pos: list[float], neg: list[float]) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size)) if p.size and n.size else float("nan")


def _points_at(m: np.ndarray, grid: PatchGrid, gt: np.ndarray) -> bool:
    """Argmax cell of ``m`` inside or touching any ground-truth box (image px)."""
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    cell = grid.cells_to_image_xyxy(np.array([[c, r, c + 1, r + 1]], dtype=np.float64))
    touch = cell + np.array([-0.5, -0.5, 0.5, 0.5])
    return bool((box_intersection(touch, gt) > 0).any())


def _oracle_box(gt: np.ndarray, wh: tuple[int, int], grow: float = 3.0) -> np.ndarray:
    """The oracle crop: a square of ``grow`` times the long side of the boxes' union, about its centre."""
    u = np.array([gt[:, 0].min(), gt[:, 1].min(), gt[:, 2].max(), gt[:, 3].max()])
    c, half = (u[:2] + u[2:]) / 2, (u[2:] - u[:2]).max() * grow / 2
    return np.clip(np.concatenate([c - half, c + half]), 0, [wh[0], wh[1], wh[0], wh[1]])


def _vision_only_map(adapter: LlavaAdapter, image: Image.Image, target: str) -> np.ndarray:
    """Cosine of each projector output with the target's words, (P,) (:meth:`LlavaAdapter.vision_word_similarity`)."""
    return adapter.vision_word_similarity(image, target).numpy().astype(np.float64)


def _sliding_windows(wh: tuple[int, int], side: float) -> np.ndarray:
    """Windows of ``side`` px with stride side/2 covering the image, (M, 4)."""
    w, h = wh
    xs = np.arange(0, max(w - side, 0) + 1, side / 2)
    ys = np.arange(0, max(h - side, 0) + 1, side / 2)
    return np.array([[x, y, min(x + side, w), min(y + side, h)] for y in ys for x in xs])


_SCORING: dict[str, Scheme] = {"logit": "logit", "letter": "letter-first"}
"""The :mod:`~focus_tool.eval.scoring` scheme that judges each answer scheme's replies."""


def _judge(answer: str | None, options: list[str], correct_option: str, scheme: str) -> bool:
    """Whether a reply picks ``correct_option``, judged by :func:`~focus_tool.eval.scoring.predicted_letter`."""
    return predicted_letter(answer or "", options, _SCORING[scheme]) == LETTERS[options.index(correct_option)]


SCHEME_TEXT = {
    "letter": "letter generation, strict first-letter match, options shuffled per item",
    "logit": "V* logit matching (highest mean log-probability option as the reply to the bare question)",
}


def evaluate(
    model: str | None,
    *,
    n: int,
    seed: int,
    out: Path,
    ablations: bool,
    limit_layers: bool = True,
    overrides: dict[str, Any] | None = None,
    scheme: str | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Run every measurement and write the report; returns the summary dict."""
    adapter = load_adapter(model)
    if not isinstance(adapter, LlavaAdapter):
        raise TypeError("the synthetic report needs a LLaVA-family checkpoint")
    from focus_tool.presets import apply_overrides

    cfg = apply_overrides(config_for(adapter, model), overrides or {})
    if scheme is not None:
        cfg = dataclasses.replace(cfg, answer=dataclasses.replace(cfg.answer, scheme=scheme))  # type: ignore[arg-type]
    scheme = cfg.answer.scheme
    pipe = FocusPipeline(adapter, cfg)
    lo, hi = cfg.relevance.layers or (adapter.num_layers // 2, adapter.num_layers)
    variants: dict[str, FocusConfig] = {}
    if ablations:
        variants["no_ranking"] = dataclasses.replace(cfg, rank=dataclasses.replace(cfg.rank, n_steps=1, overrun=False))
        variants["random_map"] = dataclasses.replace(
            cfg, relevance=dataclasses.replace(cfg.relevance, map_source="random")
        )
        # what the ranking is worth depends on how often the map's first region is already right: the same
        # n_steps = 1 cut on a random map (and, when the preset clamps, on the unclamped map of the paper's formula)
        variants["random_map_no_ranking"] = dataclasses.replace(
            variants["random_map"], rank=variants["no_ranking"].rank
        )
        if cfg.relevance.clamp_similarity:
            variants["unclamped_map"] = dataclasses.replace(
                cfg, relevance=dataclasses.replace(cfg.relevance, clamp_similarity=False)
            )
            variants["unclamped_map_no_ranking"] = dataclasses.replace(
                variants["unclamped_map"], rank=variants["no_ranking"].rank
            )
        variants["kk_norope"] = dataclasses.replace(
            cfg, relevance=dataclasses.replace(cfg.relevance, feature="key_norope")
        )
        for layer in range(adapter.num_layers):
            if (layer, layer + 1) != (lo, hi):
                variants[f"layer_{layer}"] = dataclasses.replace(
                    cfg, relevance=dataclasses.replace(cfg.relevance, layers=(layer, layer + 1))
                )
        if (0, adapter.num_layers) != (lo, hi):
            variants["all_layers"] = dataclasses.replace(
                cfg, relevance=dataclasses.replace(cfg.relevance, layers=(0, adapter.num_layers))
            )
    var_pipes = {k: FocusPipeline(adapter, v) for k, v in variants.items()}
    items = syn.benchmark_items(seed, n, stream=syn.VALIDATION_STREAM if split == "validation" else syn.TEST_STREAM)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    pos_conf: list[float] = []
    neg_conf: list[float] = []
    t_start = time.time()
    for idx, item in enumerate(tqdm(items, desc="synthetic", unit="q")):
        q = item.question
        image = syn.render(item.scene)
        rng = np.random.default_rng([seed, idx])
        options = list(q.options)
        rng.shuffle(options)
        correct = q.options[0]
        gt = np.asarray(q.target_boxes_xyxy, dtype=np.float64)
        rec: dict[str, Any] = {"id": item.item_id, "kind": q.kind, "correct": correct, "wh": list(image.size)}
        van = pipe.vanilla(image, question=q.text, options=options)
        rec["vanilla"] = _judge(van.answer, options, correct, scheme)
        ob = _oracle_box(gt, image.size)
        orc = pipe.vanilla(crop(image, ob), question=q.text, options=options)
        rec["oracle"] = _judge(orc.answer, options, correct, scheme)
        res = pipe.zoom(image, question=q.text, options=options)
        rec["focus"] = _judge(res.answer, options, correct, scheme)
        rec["focus_answer"] = res.answer
        rec["focus_status"] = None if res.status is None else res.status.question
        rec["focus_confidence"] = None if res.answer_evidence is None else res.answer_evidence.confidence
        rec["vanilla_confidence"] = None if van.answer_evidence is None else van.answer_evidence.confidence
        rec["targets_ok"] = sorted(res.targets) == sorted(q.targets)
        rec["search_fp"] = res.forward_passes.search
        rec["answer_fp"] = res.forward_passes.answer
        rec["extraction_fp"] = res.forward_passes.extraction
        rec["prefill_tokens"] = res.prefill_tokens
        rec["wall_s"] = sum(res.timings_s.values())
        grid = adapter.grid_for(image.size)
        # coverage and pointing use the ground-truth target (independent of extraction)
        rec["pointing_layers"] = {}
        for ti, target in enumerate(q.targets):
            pre = adapter.prefill(image, existence_prompt(target), target)
            tgt_gt = gt[ti : ti + 1]
            for layer in range(adapter.num_layers):
                m = relevance_map(
                    pre.layer_values[layer : layer + 1], pre.target_positions, pre.visual_positions, cfg.relevance
                )
                g, gg = to_grid(m, pre.grid, cfg.relevance)
                rec["pointing_layers"].setdefault(str(layer), []).append(_points_at(g, gg, tgt_gt))
            m = relevance_map(pre.layer_values[lo:hi], pre.target_positions, pre.visual_positions, cfg.relevance)
            g, gg = to_grid(m, pre.grid, cfg.relevance)
            rec.setdefault("pointing", []).append(_points_at(g, gg, tgt_gt))
            vm, _ = to_grid(_vision_only_map(adapter, image, target), pre.grid, cfg.relevance)
            rec.setdefault("pointing_vision_only", []).append(_points_at(vm, gg, tgt_gt))
        sel = np.array([r.box for r in res.regions if r.selected], dtype=np.float64).reshape(-1, 4)
        cov = box_coverage(sel, gt).max(axis=0) if len(sel) else np.zeros(len(gt))
        rec["covered"] = bool((cov >= 0.5).all())
        # existence: a FOCUS-sized crop on the first target vs one away from any card of that colour
        side = grid.cell_wh[0] * cfg.proposal.s_max
        c = (gt[0, :2] + gt[0, 2:]) / 2 + rng.uniform(-0.25, 0.25, 2) * side
        pos_box = np.clip(np.concatenate([c - side / 2, c + side / 2]), 0, [*image.size, *image.size])
        same = np.array([cd.xyxy for cd in item.scene.cards if cd.name == q.targets[0]])
        neg_box = None
        for _ in range(50):
            x, y = rng.uniform(0, max(1, image.width - side)), rng.uniform(0, max(1, image.height - side))
            cand = np.array([x, y, x + side, y + side])
            if (box_intersection(cand[None], same) == 0).all():
                neg_box = cand
                break
        prompt = existence_prompt(q.targets[0])
        if neg_box is not None:
            margins = adapter.yes_no_margins([crop(image, pos_box), crop(image, neg_box)], [prompt] * 2)
            conf = 1 / (1 + np.exp(-margins.numpy()))
            pos_conf.append(float(conf[0]))
            neg_conf.append(float(conf[1]))
        for name, vp in var_pipes.items():
            vr = vp.zoom(image, question=q.text, options=options)
            rec[f"abl_{name}"] = _judge(vr.answer, options, correct, scheme)
            rec[f"abl_{name}_fp"] = vr.forward_passes.search
        if ablations:  # exhaustive sliding windows ranked by P(Yes), no map
            wins = _sliding_windows(image.size, side)
            best = []
            fps = 0
            for target in q.targets:
                crops = [crop(image, b) for b in wins]
                margins = torch.cat(
                    [
                        adapter.yes_no_margins(crops[i : i + 16], [existence_prompt(target)] * len(crops[i : i + 16]))
                        for i in range(0, len(crops), 16)
                    ]
                )
                fps += len(crops)
                best.append(wins[int(margins.argmax())])
            from focus_tool.steps.answer import answer_view

            view = answer_view(image, best, type2=False, cfg=cfg.answer)
            if scheme == "logit":
                ans, _ = pipe._best_option([view.image], q.text, options)
            else:
                ans = adapter.generate(view.image, pipe._answer_text(q.text, options), max_new_tokens=8)
            rec["abl_sliding_window"] = _judge(ans, options, correct, scheme)
            rec["abl_sliding_window_fp"] = fps
        records.append(rec)
    with (out / "items.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    summary = _summarise(
        records,
        pos_conf,
        neg_conf,
        adapter.num_layers,
        (lo, hi),
        list(var_pipes) + (["sliding_window"] if ablations else []),
    )
    conf = [r["focus_confidence"] for r in records]
    if all(c is not None for c in conf):
        table = reliability_table(conf, [r["focus"] for r in records])
        summary["reliability"] = {"table": table, "ece": expected_calibration_error(table)}
        summary["low_confidence"] = {
            "threshold": cfg.answer.low_confidence,
            "flagged": round(100 * float(np.mean([c < cfg.answer.low_confidence for c in conf])), 2),
        }
        if split == "validation":
            summary["low_confidence"]["choice"] = choose_low_confidence(conf, [r["focus"] for r in records])
        plot_reliability(table, out / "reliability.png", f"FOCUS answers, {split} split (n = {n}, seed {seed})")
    summary.update(
        {
            "split": split,
            "model": adapter.model_id,
            "n": n,
            "seed": seed,
            "wall_s_total": round(time.time() - t_start, 1),
            "preset": dataclasses.asdict(cfg)["relevance"]
            | {"proposal": dataclasses.asdict(cfg.proposal), "rank": dataclasses.asdict(cfg.rank)},
            "answer_scheme": SCHEME_TEXT[scheme],
        }
    )
    (out / "report.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "report.md").write_text(markdown(summary))
    return summary


def _summarise(
    records: list[dict[str, Any]],
    pos: list[float],
    neg: list[float],
    n_layers: int,
    layers: tuple[int, int],
    ablations: list[str],
) -> dict[str, Any]:
    """Aggregate per-item records into the report's numbers."""

    def mean(key: str, rs: list[dict[str, Any]] | None = None) -> float:
        rs = records if rs is None else rs
        return round(100 * float(np.mean([bool(r[key]) for r in rs])), 2) if rs else float("nan")

    van, orc, foc = mean("vanilla"), mean("oracle"), mean("focus")
    flat = [p for r in records for p in r["pointing"]]
    s: dict[str, Any] = {
        "accuracy": {"vanilla": van, "oracle": orc, "focus": foc},
        "chance": round(100 * float(np.mean([0.5 if r["kind"] == "relative" else 0.25 for r in records])), 2),
        "gap_closed": round((foc - van) / (orc - van), 3) if orc != van else float("nan"),
        "per_kind": {
            k: {m: mean(m, [r for r in records if r["kind"] == k]) for m in ("vanilla", "oracle", "focus")}
            | {"n": sum(r["kind"] == k for r in records)}
            for k in syn.KINDS
        },
        "target_naming": mean("targets_ok"),
        "pointing": round(100 * float(np.mean(flat)), 2),
        "pointing_per_layer": {
            str(layer): round(100 * float(np.mean([p for r in records for p in r["pointing_layers"][str(layer)]])), 2)
            for layer in range(n_layers)
        },
        "pointing_vision_only": round(100 * float(np.mean([p for r in records for p in r["pointing_vision_only"]])), 2),
        "coverage_ge_50": mean("covered"),
        "answered_on_region": round(
            100 * float(np.mean([r["focus_status"] == "answered_on_region" for r in records])), 2
        ),
        "existence_auroc": round(auroc(pos, neg), 4),
        "layers": list(layers),
        "search_fps_mean": round(float(np.mean([r["search_fp"] for r in records])), 3),
        "answer_fps_mean": round(float(np.mean([r["answer_fp"] for r in records])), 3),
        "extraction_fps_mean": round(float(np.mean([r["extraction_fp"] for r in records])), 3),
        "prefill_tokens_mean": round(float(np.mean([r["prefill_tokens"] for r in records])), 1),
        "wall_s_mean": round(float(np.mean([r["wall_s"] for r in records])), 4),
        "ablations": {
            a: {
                "accuracy": mean(f"abl_{a}"),
                "search_fps_mean": round(float(np.mean([r[f"abl_{a}_fp"] for r in records])), 2),
            }
            for a in ablations
        },
    }
    return s


def markdown(s: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    a = s["accuracy"]
    lines = [
        f"# Synthetic benchmark: {s['model']} ({s.get('split', 'test')} split, n = {s['n']}, seed {s['seed']})",
        "",
        f"Answer scheme: {s['answer_scheme']}. Chance: {s['chance']} %.",
        "",
        "| method | accuracy % | search FPs / q |",
        "|---|---|---|",
        f"| vanilla (whole image) | {a['vanilla']} | 0 |",
        f"| oracle crop (ground truth) | {a['oracle']} | 0 |",
        f"| FOCUS (layers {s['layers']}) | {a['focus']} | {s['search_fps_mean']} |",
    ]
    lines += [f"| ablation: {k} | {v['accuracy']} | {v['search_fps_mean']} |" for k, v in s["ablations"].items()]
    lines += [
        "",
        f"Gap closed (FOCUS - vanilla) / (oracle - vanilla): **{s['gap_closed']}**. "
        f"Target naming: {s['target_naming']} %.",
        "",
        "| kind | n | vanilla | oracle | FOCUS |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {k} | {v['n']} | {v['vanilla']} | {v['oracle']} | {v['focus']} |" for k, v in s["per_kind"].items()]
    lines += [
        "",
        "Pointing (argmax cell inside or touching the ground-truth box), %:",
        "",
        "| map | pointing % |",
        "|---|---|",
    ]
    lines += [f"| V-V layer {k} | {v} |" for k, v in s["pointing_per_layer"].items()]
    lines += [
        f"| V-V layers {s['layers']} (preset) | {s['pointing']} |",
        f"| vision-only (projector output vs word embedding) | {s['pointing_vision_only']} |",
        "",
        f"Selected region covers >= 50 % of the ground-truth box: {s['coverage_ge_50']} %. "
        f"Existence AUROC on crops with vs without the target: {s['existence_auroc']}.",
        "",
    ]
    if "reliability" in s:
        lines += evidence_markdown(s)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/embedded"))
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--scheme", choices=list(SCHEME_TEXT), default=None, help="answer scheme (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], help="override a setting: GROUP.FIELD=JSON_VALUE")
    ap.add_argument(
        "--split", choices=["test", "validation"], default="test", help="test split or validation stream (thresholds)"
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    s = evaluate(
        a.model,
        n=a.n,
        seed=a.seed,
        out=a.out,
        ablations=a.ablations,
        overrides=overrides,
        scheme=a.scheme,
        split=a.split,
    )
    sys_out = markdown(s)
    import sys

    sys.stdout.write(sys_out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

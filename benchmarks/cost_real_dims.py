"""Cost at real dimensions: seconds per question at LLaVA-1.5-7B and Qwen2.5-VL-7B widths, measured on this machine.

The benchmarks run on the embedded model (a 4-layer, 2.8 M-parameter LLaVA), whose wall clock says little about a
7B backbone. This script turns each method's *measured counts* (sequences, prefill tokens and images per question and
phase, from a ``benchmarks/compare.py``-style report JSON) into seconds per question at 7B dimensions:

1. **Per-layer timings.** One decoder layer of each LM and one block of each vision tower are built from transformers
   configs with random weights (nothing is downloaded; the numbers are the published hub configs, listed with their
   source in :data:`LLAVA` and :func:`qwen_backbone`). ``--layers-timed`` layers (default 2) run back to back
   under ``torch.inference_mode`` after one warm-up; ``--repeats`` rounds (default 8) each take every case of every
   backbone in turn, and the minimum over the rounds divided by the number of layers is the per-layer time (the
   cores may be shared with other jobs, which only ever add time, so a stretch of contention spread over all
   cases is skipped by the minimum; the median is recorded beside it). LM layers are timed at a
   few sequence lengths and fitted by least squares to ``t(n) = a*n + b*n^2 + c`` (linear layers, attention,
   per-call overhead). Vision blocks are timed at the one patch count of the stated image resolution; the
   projector (LLaVA's 2-layer MLP, Qwen's patch merger) is timed too; patch embeddings are left out (one small
   conv). SDPA attention, batch 1, causal mask in the LM (``attention_mask=None``), dtype ``--dtype`` (default
   bfloat16: the dtype these checkpoints run in; a CPU with AMX runs it natively). Qwen2.5-VL's LM layer is the
   real ``Qwen2_5_VLDecoderLayer`` with M-RoPE over plain positions; its vision blocks are the real
   ``Qwen2_5_VLVisionBlock`` with constant rotary tables, windowed blocks given 8 x 8-patch windows.
2. **Token conversion.** On the embedded model an image is 144 tokens (12 x 12). Per phase (search, answer, extraction):
   ``real tokens = tokens - images*144 + images*N_img``, with N_img = 576 for LLaVA-1.5 (336 px, 24 x 24) and 1296
   for Qwen2.5-VL at a stated 1008 x 1008 px input (72 x 72 patches of 14 px merged 2 x 2: 36 x 36; ``--qwen-px``).
   Every image, whole or crop, is taken at that one resolution (LLaVA-1.5 always resizes to 336; Qwen2.5-VL would
   give a small crop fewer tokens, so its crop rows are an upper bound).
3. **Seconds per question** = sum over phases of ``sequences * L * t(mean n)`` (mean n = real tokens / sequences)
   plus ``images * (vision blocks + projector)``. Approximations, stated in the report: each sequence is costed as
   its own batch-1 forward at the phase's *mean* length (t is nearly linear, so the mean loses little); a
   continuation of a cached prefix is costed as a sequence of its own tokens only, so its attention to the prefix
   (n_new * n_prefix, small beside the linear layers at these lengths) is left out; decode steps of generated
   replies, embeddings, the final norm and the LM head at one position are left out (as in compare.py's TFLOPs).
   When a report has no per-phase fields (``phase_tokens_mean``, ``phase_images_mean``: older reports such as the
   committed ``benchmarks/results/compare/embedded_synthetic.json``), images = sequences for search and answer and
   0 for extraction, and the prefill tokens are split over phases in proportion to sequences; such rows are marked
   "estimated split".
4. **Relevance-map share.** A random value cache of real shape (LLaVA-1.5: 32 layers x 32 KV heads x ~620 positions
   x 128, map layers [14, 32); Qwen2.5-VL: 28 x 4 x ~1350 x 128, map layers [21, 28)) goes through exactly what
   ``FocusPipeline._search`` does after the prefill: ``relevance_map`` then ``to_grid`` with the backbone's preset
   ``RelevanceConfig`` and a ``PatchGrid`` built as the adapter builds it, for a 3-token target. Also timed: turning
   the cache into the per-layer float32 values the adapter hands over (``hf.py``: ``[0].float()`` on every layer).
   These small, memory-bound ops suffer most when other jobs share the cores, so they run ``--map-per-round`` times
   per round.
   Both are reported as a percentage of one prefill at that length (L * t(N) + one image through the vision tower).
   The map is computed on the CPU (``relevance_map`` allocates its accumulators there), also with ``--device cuda``.
   Beside it, :func:`fused_map` (the same arithmetic with each layer normalised once and all target rows in one
   batched matmul; checked equal) shows what the map could cost; it is a yardstick, not library code.

Run (inputs: any number of report JSONs with the compare.py schema)::

    python benchmarks/cost_real_dims.py --reports benchmarks/results/compare/embedded_synthetic.json \
        --out benchmarks/results/cost_real_dims

``--device cuda`` runs the same timings on a GPU when one is present (never needed). ``--quick`` uses tiny widths
for tests (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

PHASES = ("search", "answer", "extraction")
# reports written before the target-extraction phase was named ``extraction`` (the committed ones) call it ``aux``
OLD_PHASE_NAMES = {"extraction": "aux"}
EMBEDDED_IMAGE_TOKENS = 144  # the embedded model's 12 x 12 image tokens


@dataclass(frozen=True)
class Backbone:
    """The dimensions that set a backbone's prefill cost (published hub config values; ``source`` says which)."""

    name: str
    source: str
    lm_family: str  # "llama" | "qwen2_5_vl"
    lm_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vision_family: str  # "clip" | "qwen2_5_vl"
    vision_layers: int
    vision_full_layers: int  # blocks with full attention (the rest windowed); CLIP: all
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    vision_patches: int  # tokens through each vision block per image (CLIP: 577 incl. CLS)
    window_patches: int  # patches per attention window (windowed blocks); 0 = none
    image_tokens: int  # LM tokens per image (N_img)
    projector_in: int  # width into the projector / merger per output token
    preset: str  # focus_tool.presets name for the map settings
    map_positions: int  # sequence length of the relevance prefill
    map_vis_start: int  # position of the first image token in that prefill
    grid_rows: int
    grid_cols: int
    grid_kind: str  # "padded_square" | "stretched"
    input_px: int
    map_image_wh: tuple[int, int]
    lm_lengths: tuple[int, ...] = (64, 128, 256, 640, 1400)
    note: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


QWEN_PX = 1008  # stated Qwen2.5-VL input resolution (square); 14-px patches, 2 x 2 merge


def qwen_backbone(px: int = QWEN_PX) -> Backbone:
    """Qwen2.5-VL-7B at a ``px`` x ``px`` input (``px`` a multiple of 28, and of 112 for whole windows)."""
    side = px // 14  # patches per side
    merged = side // 2
    return Backbone(
        name="Qwen2.5-VL-7B",
        source=(
            "Qwen/Qwen2.5-VL-7B-Instruct config.json: text hidden 3584, intermediate 18944, 28 layers, 28 heads, "
            "4 KV heads (head dim 128), M-RoPE; vision depth 32, hidden 1280, intermediate 3420, 16 heads, 14-px "
            "patches, 2x2 spatial merge, window 112 px, full attention in blocks 7/15/23/31, out 3584"
        ),
        lm_family="qwen2_5_vl",
        lm_layers=28,
        hidden=3584,
        intermediate=18944,
        heads=28,
        kv_heads=4,
        vision_family="qwen2_5_vl",
        vision_layers=32,
        vision_full_layers=4,
        vision_hidden=1280,
        vision_intermediate=3420,
        vision_heads=16,
        vision_patches=side * side,
        window_patches=(112 // 14) ** 2,
        image_tokens=merged * merged,
        projector_in=1280 * 4,
        preset="qwen2.5-vl",
        map_positions=merged * merged + 54,
        map_vis_start=15,
        grid_rows=merged,
        grid_cols=merged,
        grid_kind="stretched",
        input_px=px,
        map_image_wh=(px, px),
        lm_lengths=(64, 256, 768, 1400, 2800),
        note=(
            f"image at {px} x {px} px: {side} x {side} = {side * side} patches, {merged * merged} LM tokens; "
            "windowed blocks cut the patches into 8 x 8-patch windows (HF's per-window SDPA loop on CPU)"
        ),
    )


LLAVA = Backbone(
    name="LLaVA-1.5-7B",
    source=(
        "llava-hf/llava-1.5-7b-hf config.json: Vicuna-7B (Llama) hidden 4096, intermediate 11008, 32 layers, "
        "32 heads (MHA, head dim 128); CLIP ViT-L/14-336 hidden 1024, intermediate 4096, 24 layers, 16 heads, "
        "577 tokens (576 + CLS); projector 1024 -> 4096 -> 4096 (GELU); 576 image tokens"
    ),
    lm_family="llama",
    lm_layers=32,
    hidden=4096,
    intermediate=11008,
    heads=32,
    kv_heads=32,
    vision_family="clip",
    vision_layers=24,
    vision_full_layers=24,
    vision_hidden=1024,
    vision_intermediate=4096,
    vision_heads=16,
    vision_patches=577,
    window_patches=0,
    image_tokens=576,
    projector_in=1024,
    preset="llava-1.5",
    map_positions=620,
    map_vis_start=5,
    grid_rows=24,
    grid_cols=24,
    grid_kind="padded_square",
    input_px=336,
    map_image_wh=(2246, 1582),  # a V*-sized image, padded to a square
    note="HF runs all 24 CLIP layers (the features come from the penultimate one)",
)

# tiny stand-ins for --quick (tests): the same code paths, meaningless numbers
TINY = (
    replace(
        LLAVA,
        name="tiny-llava",
        source="tiny test dims",
        lm_layers=4,
        hidden=64,
        intermediate=128,
        heads=4,
        kv_heads=4,
        vision_layers=2,
        vision_full_layers=2,
        vision_hidden=32,
        vision_intermediate=64,
        vision_heads=2,
        vision_patches=17,
        image_tokens=16,
        projector_in=32,
        map_positions=40,
        map_vis_start=3,
        grid_rows=4,
        grid_cols=4,
        input_px=56,
        lm_lengths=(8, 32, 128),  # up to past map_positions: the map's prefill is read inside the measured range
        note="",
    ),
    replace(
        qwen_backbone(224),
        name="tiny-qwen",
        source="tiny test dims",
        lm_layers=4,
        hidden=64,
        intermediate=128,
        heads=4,
        kv_heads=2,
        vision_layers=2,
        vision_full_layers=1,
        vision_hidden=32,
        vision_intermediate=64,
        vision_heads=2,
        projector_in=128,
        lm_lengths=(8, 32, 128),
        note="",
    ),
)


# ---------------------------------------------------------------------------------------------- count conversion


@dataclass(frozen=True)
class PhaseCounts:
    """Per question, one phase: sequences (forward passes), prefill tokens computed, images through the tower."""

    sequences: float
    tokens: float
    images: float


@dataclass(frozen=True)
class CostModel:
    """Per-layer costs of one backbone: ``t(n) = a*n + b*n^2 + c`` per LM layer, seconds per image for vision."""

    lm_layers: int
    a: float
    b: float
    c: float
    vision_s_per_image: float
    image_tokens: int

    def lm_layer_s(self, n: float) -> float:
        return self.a * n + self.b * n * n + self.c


def _phase_value(table: Mapping[str, Any], phase: str, suffix: str = "") -> Any:
    """``table[phase + suffix]``, else the same under the phase's name before the rename, else None."""
    for name in (phase, OLD_PHASE_NAMES.get(phase)):
        if name is not None and name + suffix in table:
            return table[name + suffix]
    return None


def phase_counts(method: Mapping[str, Any]) -> tuple[dict[str, PhaseCounts], bool]:
    """Per-phase counts of one method of a report; second value True when the split is estimated.

    With ``phase_tokens_mean`` and ``phase_images_mean`` present they are used as they are. Without them, images =
    sequences for search and answer and 0 for extraction, and ``prefill_tokens_mean`` is split in proportion to
    sequences. A report written before the rename (``aux_fps_mean``, ``aux`` keys) reads the same.
    """
    seqs = {p: float(_phase_value(method, p, "_fps_mean") or 0.0) for p in PHASES}
    tok, img = method.get("phase_tokens_mean"), method.get("phase_images_mean")
    if isinstance(tok, Mapping) and isinstance(img, Mapping):
        return {
            p: PhaseCounts(seqs[p], float(_phase_value(tok, p) or 0.0), float(_phase_value(img, p) or 0.0))
            for p in PHASES
        }, False
    total_seqs = sum(seqs.values())
    total_tok = float(method.get("prefill_tokens_mean", 0.0) or 0.0)
    out = {}
    for p in PHASES:
        share = seqs[p] / total_seqs if total_seqs > 0 else 0.0
        out[p] = PhaseCounts(seqs[p], total_tok * share, 0.0 if p == "extraction" else seqs[p])
    return out, True


def real_tokens(c: PhaseCounts, image_tokens: int, embedded_image_tokens: int = EMBEDDED_IMAGE_TOKENS) -> float:
    """Prefill tokens at the real backbone: each embedded image's tokens replaced by the backbone's N_img."""
    return max(0.0, c.tokens - c.images * embedded_image_tokens + c.images * image_tokens)


def phase_seconds(
    c: PhaseCounts, model: CostModel, embedded_image_tokens: int = EMBEDDED_IMAGE_TOKENS
) -> dict[str, float]:
    """LM and vision seconds of one phase per question: sequences * L * t(mean n) + images * vision per image."""
    toks = real_tokens(c, model.image_tokens, embedded_image_tokens)
    mean_n = toks / c.sequences if c.sequences > 0 else 0.0
    lm = c.sequences * model.lm_layers * model.lm_layer_s(mean_n) if c.sequences > 0 else 0.0
    vision = c.images * model.vision_s_per_image
    return {"real_tokens": toks, "mean_n": mean_n, "lm_s": lm, "vision_s": vision, "total_s": lm + vision}


def method_seconds(
    method: Mapping[str, Any], model: CostModel, embedded_image_tokens: int = EMBEDDED_IMAGE_TOKENS
) -> dict[str, Any]:
    """Seconds per question of one method at one backbone, per phase and in total."""
    counts, estimated = phase_counts(method)
    phases = {p: phase_seconds(counts[p], model, embedded_image_tokens) for p in PHASES}
    return {
        "estimated_split": estimated,
        "counts": {p: asdict(counts[p]) for p in PHASES},
        "phases": phases,
        "sequences": sum(c.sequences for c in counts.values()),
        "real_tokens": sum(ph["real_tokens"] for ph in phases.values()),
        "images": sum(c.images for c in counts.values()),
        "lm_s": sum(ph["lm_s"] for ph in phases.values()),
        "vision_s": sum(ph["vision_s"] for ph in phases.values()),
        "total_s": sum(ph["total_s"] for ph in phases.values()),
    }


def fit_cost(lengths: Sequence[float], seconds: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``t(n) = a*n + b*n^2 + c`` through the measured (n, t) points; returns (a, b, c).

    The free fit is kept when it predicts a positive time everywhere on ``[0, 4 * longest measured length]`` (the
    lengths the reports read it at). Timings near the clock's resolution (tiny models, one round) can tilt it below
    zero there; then the fit is the non-negative least squares one instead (a, b, c >= 0: every term of a layer's
    cost is a cost), found exactly by solving each subset of the three terms and keeping the best admissible one.
    """
    n = np.asarray(lengths, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    x = np.stack([n, n * n, np.ones_like(n)], axis=1)  # (P, 3)
    coef, *_ = np.linalg.lstsq(x, t, rcond=None)
    a, b, c = (float(v) for v in coef)
    probe = [0.0, 4.0 * float(n.max())]
    if b != 0 and 0 < -a / (2 * b) < probe[1]:
        probe.append(-a / (2 * b))  # the parabola's vertex: its minimum when b > 0
    if all(a * m + b * m * m + c > 0 for m in probe):
        return a, b, c
    best, best_res = np.zeros(3), float(np.sum(t * t))
    for cols in ([0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2]):
        sub, *_ = np.linalg.lstsq(x[:, cols], t, rcond=None)
        if np.any(sub < 0):
            continue
        full = np.zeros(3)
        full[cols] = sub
        res = float(np.sum((x @ full - t) ** 2))
        if res < best_res:
            best, best_res = full, res
    return float(best[0]), float(best[1]), float(best[2])


# ---------------------------------------------------------------------------------------------- timing


@dataclass
class Timer:
    """Wall clock of several callables, one warm-up each, then ``repeats`` rounds taking them in turn.

    The machine may be shared (other jobs take the cores at times), so the estimate of a cost is the *minimum*
    over the rounds, the least-disturbed run; the median is recorded beside it. Taking the callables in turn within
    each round spreads a disturbed stretch over all of them instead of one.
    """

    device: torch.device
    repeats: int

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def runs(
        self, fns: Mapping[str, Callable[[], object]], per_round: Mapping[str, int] | None = None, warmup: int = 1
    ) -> dict[str, dict[str, float]]:
        """{name: {"min": s, "median": s, "n": runs}} over the rounds; ``per_round[name]`` runs per round (1)."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        self.sync()
        seen: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(self.repeats):
            for k, fn in fns.items():
                for _ in range((per_round or {}).get(k, 1)):
                    t0 = time.perf_counter()
                    fn()
                    self.sync()
                    seen[k].append(time.perf_counter() - t0)
        return {k: {"min": min(v), "median": statistics.median(v), "n": len(v)} for k, v in seen.items()}


def _mrope(head_dim: int) -> list[int]:
    """M-RoPE sections (temporal, height, width) of the rotary half: [16, 24, 24] at head dim 128, scaled below."""
    half = head_dim // 2
    t, h = half // 4, 3 * half // 8
    return [t, h, half - t - h]


def _lm_layers(bb: Backbone, k: int, dtype: torch.dtype, device: torch.device) -> tuple[list[Any], Any]:
    """``k`` random decoder layers of ``bb``'s LM and its rotary embedding module."""
    if bb.lm_family == "llama":
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        cfg: Any = LlamaConfig(
            hidden_size=bb.hidden,
            intermediate_size=bb.intermediate,
            num_hidden_layers=k,
            num_attention_heads=bb.heads,
            num_key_value_heads=bb.kv_heads,
            vocab_size=32064,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        )
        cfg._attn_implementation = "sdpa"
        layers: list[Any] = [LlamaDecoderLayer(cfg, layer_idx=i) for i in range(k)]
        rope: Any = LlamaRotaryEmbedding(cfg)
    else:
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VLDecoderLayer,
            Qwen2_5_VLRotaryEmbedding,
        )

        cfg = Qwen2_5_VLTextConfig(
            hidden_size=bb.hidden,
            intermediate_size=bb.intermediate,
            num_hidden_layers=k,
            num_attention_heads=bb.heads,
            num_key_value_heads=bb.kv_heads,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _mrope(bb.head_dim)},
        )
        cfg._attn_implementation = "sdpa"
        layers = [Qwen2_5_VLDecoderLayer(cfg, layer_idx=i) for i in range(k)]
        rope = Qwen2_5_VLRotaryEmbedding(cfg)
    layers = [layer.to(device=device, dtype=dtype).eval() for layer in layers]
    return layers, rope.to(device)


def lm_cases(bb: Backbone, k: int, dtype: torch.dtype, dev: torch.device) -> dict[str, Callable[[], object]]:
    """One callable per length in ``bb.lm_lengths`` (key ``lm/{n}``): ``k`` decoder layers on n tokens."""
    layers, rope = _lm_layers(bb, k, dtype, dev)
    fns: dict[str, Callable[[], object]] = {}
    with torch.inference_mode():
        for n in bb.lm_lengths:
            x = torch.randn(1, n, bb.hidden, dtype=dtype, device=dev)
            pos = torch.arange(n, device=dev)[None]
            pe = rope(x, pos if bb.lm_family == "llama" else pos[None].expand(3, 1, n))

            def run(x: torch.Tensor = x, pos: torch.Tensor = pos, pe: Any = pe) -> None:
                h = x
                for layer in layers:
                    h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
                    h = h[0] if isinstance(h, tuple) else h

            fns[f"lm/{n}"] = run
    return fns


def vision_cases(bb: Backbone, k: int, dtype: torch.dtype, dev: torch.device) -> dict[str, Callable[[], object]]:
    """Callables for ``k`` vision blocks of each kind (``vision/full_block_s``, ``vision/window_block_s``) and for
    the projector (``vision/projector_s``), one image."""
    got: dict[str, Callable[[], object]]
    with torch.inference_mode():
        if bb.vision_family == "clip":
            from transformers import CLIPVisionConfig
            from transformers.models.clip.modeling_clip import CLIPEncoderLayer

            vcfg: Any = CLIPVisionConfig(
                hidden_size=bb.vision_hidden,
                intermediate_size=bb.vision_intermediate,
                num_attention_heads=bb.vision_heads,
                num_hidden_layers=k,
                hidden_act="quick_gelu",
            )
            vcfg._attn_implementation = "sdpa"
            blocks: list[Any] = [CLIPEncoderLayer(vcfg).to(device=dev, dtype=dtype).eval() for _ in range(k)]
            x = torch.randn(1, bb.vision_patches, bb.vision_hidden, dtype=dtype, device=dev)

            def run_clip() -> None:
                h = x
                for blk in blocks:
                    h = blk(h, attention_mask=None)
                    h = h[0] if isinstance(h, tuple) else h

            proj = torch.nn.Sequential(
                torch.nn.Linear(bb.projector_in, bb.hidden), torch.nn.GELU(), torch.nn.Linear(bb.hidden, bb.hidden)
            ).to(device=dev, dtype=dtype)
            feats = torch.randn(1, bb.image_tokens, bb.projector_in, dtype=dtype, device=dev)
            got = {"vision/full_block_s": run_clip, "vision/projector_s": lambda: proj(feats)}
        else:
            from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
            from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
                Qwen2_5_VLPatchMerger,
                Qwen2_5_VLVisionBlock,
            )

            vcfg = Qwen2_5_VLVisionConfig(
                depth=k,
                hidden_size=bb.vision_hidden,
                intermediate_size=bb.vision_intermediate,
                num_heads=bb.vision_heads,
                out_hidden_size=bb.hidden,
            )
            vcfg._attn_implementation = "sdpa"
            blocks = [Qwen2_5_VLVisionBlock(vcfg).to(device=dev, dtype=dtype).eval() for _ in range(k)]
            n = bb.vision_patches
            hd = bb.vision_hidden // bb.vision_heads
            pe = (torch.ones(n, hd, device=dev, dtype=dtype), torch.zeros(n, hd, device=dev, dtype=dtype))
            x = torch.randn(n, bb.vision_hidden, dtype=dtype, device=dev)
            full = torch.tensor([0, n], dtype=torch.int32, device=dev)
            win = torch.arange(0, n + 1, bb.window_patches, dtype=torch.int32, device=dev)
            if int(win[-1]) != n:
                win = torch.cat([win, torch.tensor([n], dtype=torch.int32, device=dev)])

            def run_qwen(cu: torch.Tensor) -> None:
                h = x
                for blk in blocks:
                    h = blk(h, cu_seqlens=cu, position_embeddings=pe)

            merger = Qwen2_5_VLPatchMerger(bb.hidden, bb.vision_hidden, 2).to(device=dev, dtype=dtype)
            got = {
                "vision/full_block_s": lambda: run_qwen(full),
                "vision/window_block_s": lambda: run_qwen(win),
                "vision/projector_s": lambda: merger(x),
            }
    return got


def vision_result(bb: Backbone, k: int, got: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Seconds per block (min and median) and per image from the ``vision/*`` timings."""
    res: dict[str, float] = {}
    for key, v in got.items():
        if not key.startswith("vision/"):
            continue
        name = key.removeprefix("vision/")
        per = 1 if name == "projector_s" else k
        res[name] = v["min"] / per
        res[name.replace("_s", "_median_s")] = v["median"] / per
    windowed = bb.vision_layers - bb.vision_full_layers
    res["per_image_s"] = (
        bb.vision_full_layers * res["full_block_s"]
        + windowed * res.get("window_block_s", res["full_block_s"])
        + res["projector_s"]
    )
    return res


def map_cases(
    bb: Backbone, dtype: torch.dtype, dev: torch.device
) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """Callables for the relevance map as ``FocusPipeline._search`` computes it on a random cache of real shape
    (``map/map``), the cache-to-float32 extraction (``map/extract``) and the fused yardstick (``map/fused``), and
    the map's description."""
    from focus_tool.grid import PatchGrid
    from focus_tool.presets import preset
    from focus_tool.steps.relevance import relevance_map, to_grid

    cfg = preset(bb.preset).relevance
    if cfg.layers is not None and cfg.layers[1] > bb.lm_layers:  # as presets.config_for: the default range instead
        cfg = replace(cfg, layers=None)
    lo, hi = cfg.layers or (bb.lm_layers // 2, bb.lm_layers)
    lo, hi = max(0, lo), min(hi, bb.lm_layers)
    n, hd = bb.map_positions, bb.head_dim
    gen = torch.Generator(device="cpu").manual_seed(0)
    cache = [  # what the cache holds: (B, H_kv, N, D) per layer, model dtype, on the model's device
        torch.randn(1, bb.kv_heads, n, hd, generator=gen).to(device=dev, dtype=dtype) for _ in range(bb.lm_layers)
    ]
    n_vis = bb.grid_rows * bb.grid_cols
    vis = list(range(bb.map_vis_start, bb.map_vis_start + n_vis))
    tpos = [n - 12, n - 11, n - 10]  # a 3-token target near the end of "Is there a {target} in the image?"
    if bb.grid_kind == "padded_square":
        grid = PatchGrid.padded_square(bb.map_image_wh, bb.grid_rows, bb.input_px)
    else:
        grid = PatchGrid.stretched(bb.map_image_wh, bb.grid_rows, bb.grid_cols, (bb.input_px, bb.input_px))

    def extract() -> list[torch.Tensor]:  # hf.py: cache_values(...)[0].float() for every layer
        return [c[0].float() for c in cache]

    # relevance_map accumulates on the CPU (torch.zeros without a device), so it gets CPU values here
    values = [v.cpu() for v in extract()]

    def run_map() -> None:
        vec = relevance_map(values[lo:hi], tpos, vis, cfg)
        to_grid(vec, grid, cfg)

    fns: dict[str, Callable[[], object]] = {"map/map": run_map, "map/extract": extract}
    fused_diff = None
    if fused_map(values[lo:hi], tpos, vis, cfg) is not None:
        fns["map/fused"] = lambda: to_grid(fused_map(values[lo:hi], tpos, vis, cfg), grid, cfg)  # type: ignore[arg-type]
        ref = relevance_map(values[lo:hi], tpos, vis, cfg)
        fused_diff = float(np.abs(fused_map(values[lo:hi], tpos, vis, cfg) - ref).max())  # type: ignore[operator]
    meta = {
        "layers": [lo, hi],
        "kv_heads": bb.kv_heads,
        "positions": n,
        "head_dim": hd,
        "visual_tokens": n_vis,
        "target_tokens": len(tpos),
        "grid": f"{grid.rows} x {grid.cols} ({bb.grid_kind}, image {bb.map_image_wh[0]} x {bb.map_image_wh[1]})",
        "config": {
            "smooth_sigma": cfg.smooth_sigma,
            "downsample": cfg.downsample,
            "clamp_similarity": cfg.clamp_similarity,
            "rollout_norm": cfg.rollout_norm,
            "layer_agg": cfg.layer_agg,
        },
        "map_device": "cpu",
        "fused_max_abs_diff": fused_diff,
    }
    return fns, meta


def fused_map(values: Sequence[torch.Tensor], tpos: Sequence[int], vis: Sequence[int], cfg: Any) -> np.ndarray | None:
    """The same map as ``relevance_map`` (sum over layers, row norm) with each layer normalised once and all target
    rows in one batched matmul: a yardstick for what the library's per-token loop costs, not library code.

    Returns None for settings it does not cover (product aggregation, column norm, minmax, random map).
    """
    if cfg.layer_agg != "sum" or cfg.rollout_norm != "row" or cfg.map_source != "vv":
        return None
    if cfg.negative_handling not in ("clamp", "none"):
        return None
    vis_t = torch.as_tensor(list(vis), dtype=torch.long)
    t_t = torch.as_tensor(list(tpos), dtype=torch.long)
    acc = torch.zeros(len(tpos), len(vis_t), dtype=torch.float32)  # (T, P)
    for v in values:  # (H, N, D)
        vn = torch.nn.functional.normalize(v.float(), dim=-1)
        sim = torch.bmm(vn[:, t_t], vn.transpose(1, 2)).sum(0)  # (T, N) sums of per-head cosines
        if cfg.clamp_similarity:
            sim = sim.clamp_min(0)
        acc += sim[:, vis_t] / (sim.sum(1, keepdim=True) + 1.0)
    tot = acc.sum(1, keepdim=True)
    acc = torch.where(tot != 0, acc / tot, acc)
    out = torch.ones(len(vis_t), dtype=torch.float32)
    for a in acc:
        if cfg.negative_handling == "clamp":
            a = a.clamp_min(0)
        out = out * a
        s = out.sum()
        out = out / s if s > 0 else out
    return out.double().numpy()


# ---------------------------------------------------------------------------------------------- report


def _loadavg() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS has none): how busy the shared cores were."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    from focus_tool.machine import cpu_model

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def measure_all(
    backbones: Sequence[Backbone], args: argparse.Namespace, timer: Timer, dtype: torch.dtype
) -> list[dict[str, Any]]:
    """All timings of all backbones, taken in one schedule, and the cost model each gives.

    Every case (each LM length, each vision block kind, the projector, the map) of every backbone runs once per
    round, the map cases ``--map-per-round`` times, for ``--repeats`` rounds: a stretch when other jobs hold the
    cores then touches every case a little instead of one backbone a lot.
    """
    k = args.layers_timed
    fns: dict[str, Callable[[], object]] = {}
    per_round: dict[str, int] = {}
    metas = {}
    for bb in backbones:
        print(f"building {bb.name} ...", file=sys.stderr, flush=True)
        cases = {**lm_cases(bb, k, dtype, timer.device), **vision_cases(bb, k, dtype, timer.device)}
        mfns, metas[bb.name] = map_cases(bb, dtype, timer.device)
        cases.update(mfns)
        for key, fn in cases.items():
            fns[f"{bb.name}|{key}"] = fn
            if key.startswith("map/"):
                per_round[f"{bb.name}|{key}"] = args.map_per_round
    print(f"timing {len(fns)} cases x {args.repeats} rounds ...", file=sys.stderr, flush=True)
    with torch.inference_mode():
        got_all = timer.runs(fns, per_round)
    out = []
    for bb in backbones:
        got = {key.split("|", 1)[1]: v for key, v in got_all.items() if key.split("|", 1)[0] == bb.name}
        points = [
            {"n": n, "layer_s": got[f"lm/{n}"]["min"] / k, "median_s": got[f"lm/{n}"]["median"] / k}
            for n in bb.lm_lengths
        ]
        a, b, c = fit_cost([p["n"] for p in points], [p["layer_s"] for p in points])
        vision = vision_result(bb, k, got)
        model = CostModel(bb.lm_layers, a, b, c, vision["per_image_s"], bb.image_tokens)
        mp = dict(metas[bb.name])
        mp["map_s"], mp["map_median_s"] = got["map/map"]["min"], got["map/map"]["median"]
        mp["extract_s"], mp["extract_median_s"] = got["map/extract"]["min"], got["map/extract"]["median"]
        mp["map_runs"] = got["map/map"]["n"]
        mp["fused_map_s"] = got["map/fused"]["min"] if "map/fused" in got else None
        prefill_lm = bb.lm_layers * model.lm_layer_s(bb.map_positions)
        prefill = prefill_lm + vision["per_image_s"]
        mp["prefill_s"] = prefill
        mp["prefill_lm_s"] = prefill_lm
        mp["map_share"] = mp["map_s"] / prefill
        mp["map_plus_extract_share"] = (mp["map_s"] + mp["extract_s"]) / prefill
        mp["fused_map_share"] = None if mp["fused_map_s"] is None else mp["fused_map_s"] / prefill
        out.append(
            {
                "backbone": asdict(bb),
                "lm_points": [{**p, "fit_s": model.lm_layer_s(p["n"])} for p in points],
                "lm_fit": {"a": a, "b": b, "c": c},
                "vision": vision,
                "cost_model": asdict(model),
                "map": mp,
            }
        )
    return out


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x >= 0.01 else f"{x:.2e}"


def render_md(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    lines = [
        "# Cost at real dimensions",
        "",
        f"Command: `{rep['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"transformers {m.get('transformers', '?')}, device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f", dtype {m['dtype']}; {rep['layers_timed']} layers timed back to back per kind, one warm-up, then "
        f"{rep['repeats']} rounds each taking every case of both backbones in turn (the map {rep['map_per_round']} "
        "times per round); the estimate is the "
        "minimum over the rounds (the cores are shared with other jobs; the median is given beside it); random "
        f"weights from configs, nothing downloaded. Total run {rep['total_s']:.0f} s; load average (1, 5, 15 min) "
        f"{rep.get('loadavg_start')} at the start, {rep.get('loadavg_end')} at the end.",
        "",
        "Method and approximations: see the docstring of `benchmarks/cost_real_dims.py`. In short: seconds per "
        "question = sum over phases of sequences x L x t(mean tokens per sequence) + images x (vision tower + "
        "projector); embedded image tokens (144) replaced by the backbone's; decode steps, embeddings and the LM "
        "head left out; a continuation of a cached prefix costed by its own tokens only.",
        "",
        "## Per-layer timings",
        "",
    ]
    for b in rep["backbones"]:
        bb = b["backbone"]
        lines += [
            f"### {bb['name']}",
            "",
            f"Config ({bb['source']}). {bb['note']}".rstrip() + "",
            "",
            "| LM tokens n | one decoder layer, min (s) | median (s) | fit a*n + b*n^2 + c (s) |",
            "|---:|---:|---:|---:|",
        ]
        for p in b["lm_points"]:
            lines.append(f"| {p['n']} | {_fmt_s(p['layer_s'])} | {_fmt_s(p['median_s'])} | {_fmt_s(p['fit_s'])} |")
        f, v = b["lm_fit"], b["vision"]
        lines += [
            "",
            f"Fit: a = {f['a']:.3e} s/token, b = {f['b']:.3e} s/token^2, c = {f['c']:.3e} s per layer call; "
            f"{bb['lm_layers']} layers.",
            "",
            f"Vision ({bb['vision_patches']} patches per image): full-attention block {_fmt_s(v['full_block_s'])} s"
            + (f", windowed block {_fmt_s(v['window_block_s'])} s" if "window_block_s" in v else "")
            + f", projector {_fmt_s(v['projector_s'])} s; one image through {bb['vision_layers']} blocks "
            f"({bb['vision_full_layers']} full) + projector = {_fmt_s(v['per_image_s'])} s "
            f"-> {bb['image_tokens']} LM tokens.",
            "",
        ]
    lines += ["## Seconds per question", ""]
    for r in rep["reports"]:
        lines += [
            f"Input `{r['path']}` ({r.get('benchmark', '?')}, n = {r.get('limit', '?')}, "
            f"scheme {r.get('answer_scheme', '?')}); its command: `{r.get('command', '?')}`",
            "",
            "| backbone | method | accuracy | seqs | images | real prefill tokens | LM s | vision s | s / question "
            "| x vanilla | split |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for bname, rows in r["seconds"].items():
            base = rows.get("vanilla", {}).get("total_s")
            for meth, row in rows.items():
                ratio = f"{row['total_s'] / base:.2f}" if base else "-"
                acc = row.get("accuracy")
                lines.append(
                    f"| {bname} | {meth} | {'-' if acc is None else f'{100 * acc:.2f} %'} | {row['sequences']:.2f} "
                    f"| {row['images']:.2f} | {row['real_tokens']:.0f} | {row['lm_s']:.2f} | {row['vision_s']:.2f} "
                    f"| **{row['total_s']:.2f}** | {ratio} "
                    f"| {'estimated split' if row['estimated_split'] else 'measured'} |"
                )
        if any(row["estimated_split"] for rows in r["seconds"].values() for row in rows.values()):
            lines += [
                "",
                "'estimated split': this report has no per-phase token and image counts, so images = sequences in "
                "search and answer (0 in extraction) and the tokens are split in proportion to sequences; a sequence "
                "that holds two images (e.g. ViCrop's crop beside the full image) counts one image, its second "
                "image's tokens costed at the embedded model's 144.",
            ]
        lines += ["", "Per phase (s / question, LM + vision):", ""]
        lines += ["| backbone | method | search | answer | extraction |", "|---|---|---:|---:|---:|"]
        for bname, rows in r["seconds"].items():
            for meth, row in rows.items():
                ph = row["phases"]
                lines.append(
                    f"| {bname} | {meth} | "
                    + " | ".join(f"{ph[p]['total_s']:.2f} ({ph[p]['mean_n']:.0f} tok/seq)" for p in PHASES)
                    + " |"
                )
        lines.append("")
    lines += [
        "## Relevance-map share of one prefill",
        "",
        "`relevance_map` + `to_grid` exactly as `FocusPipeline._search` calls them, on a random value cache of real "
        "shape, with the backbone's preset map settings; 'extract' is the adapter's conversion of every layer's "
        "cached values to float32 (`hf.py`). The prefill is one sequence of that length through all LM layers "
        "(from the fit) plus one image through the vision tower and projector. Target: map < 5 % of a prefill. "
        "The map runs on the CPU (`relevance_map` allocates its accumulators there). "
        "'fused' is the same map computed with each layer normalised once and the target rows in one batched "
        "matmul (`fused_map` in this script, checked equal to `relevance_map`): what the map could cost, not what "
        "the library does today.",
        "",
        "| backbone | cache (layers x KV heads x positions x head dim) | map s (median) | extract s "
        "| one prefill s | **map share** | map + extract share | fused map s (share, max abs diff) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in rep["backbones"]:
        mp = b["map"]
        lo, hi = mp["layers"]
        fused = (
            "-"
            if mp["fused_map_s"] is None
            else f"{_fmt_s(mp['fused_map_s'])} ({100 * mp['fused_map_share']:.2f} %, {mp['fused_max_abs_diff']:.1e})"
        )
        lines.append(
            f"| {b['backbone']['name']} | [{lo}, {hi}) = {hi - lo} x {mp['kv_heads']} x {mp['positions']} x "
            f"{mp['head_dim']}, {mp['visual_tokens']} image tokens, grid {mp['grid']} | {_fmt_s(mp['map_s'])} "
            f"({_fmt_s(mp['map_median_s'])}) | {_fmt_s(mp['extract_s'])} | {mp['prefill_s']:.3f} "
            f"| **{100 * mp['map_share']:.2f} %** | {100 * mp['map_plus_extract_share']:.2f} % | {fused} |"
        )
    lines += [
        "",
        "Rerun on other reports (e.g. the lean comparison):",
        "",
        "```bash",
        ".venv/bin/python benchmarks/cost_real_dims.py --reports benchmarks/results/lean/*.json "
        "--out benchmarks/results/cost_real_dims",
        "```",
        "",
    ]
    return "\n".join(lines)


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read report {path}: {e}; give a compare.py report JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise SystemExit(f"error: {path} has no 'methods' table; give a compare.py report JSON")
    return data


def costs_for_report(
    data: Mapping[str, Any], models: Mapping[str, CostModel], embedded_image_tokens: int = EMBEDDED_IMAGE_TOKENS
) -> dict[str, dict[str, Any]]:
    """{backbone: {method: seconds row}} for every method of one report."""
    out: dict[str, dict[str, Any]] = {}
    for bname, model in models.items():
        rows = {}
        for meth, md in data["methods"].items():
            row = method_seconds(md, model, embedded_image_tokens)
            row["accuracy"] = md.get("accuracy")
            rows[meth] = row
        out[bname] = rows
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--reports",
        nargs="+",
        type=Path,
        default=[ROOT / "benchmarks/results/compare/embedded_synthetic.json"],
        help="compare.py report JSONs (methods[...] with *_fps_mean, prefill_tokens_mean, ...)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cost_real_dims")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda when one is present")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--map-per-round", type=int, default=2, help="map runs per round (cheap, noisier)")
    ap.add_argument("--layers-timed", type=int, default=2)
    ap.add_argument("--qwen-px", type=int, default=QWEN_PX, help="Qwen2.5-VL input side in px (multiple of 112)")
    ap.add_argument("--embedded-image-tokens", type=int, default=EMBEDDED_IMAGE_TOKENS)
    ap.add_argument("--quick", action="store_true", help="tiny dims (tests): numbers mean nothing")
    args = ap.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for but torch sees no GPU; use --device cpu")
    if min(args.repeats, args.map_per_round, args.layers_timed) < 1:
        raise SystemExit("error: --repeats, --map-per-round and --layers-timed must be >= 1")
    if args.qwen_px % 112 != 0:
        raise SystemExit("error: --qwen-px must be a multiple of 112 (whole 8 x 8-patch windows)")
    reports, skipped = [], []
    for p in args.reports:
        try:
            reports.append((p, load_report(p)))
        except SystemExit as e:  # a glob such as results/lean/*.json also matches the *.run.json sidecars
            if len(args.reports) == 1:
                raise
            print(f"skipped {p}: {str(e).removeprefix('error: ')}", file=sys.stderr)
            skipped.append(str(p))
    if not reports:
        raise SystemExit("error: none of --reports is a compare.py report JSON (no 'methods' table)")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    timer = Timer(device, args.repeats)
    torch.manual_seed(0)
    backbones = list(TINY) if args.quick else [LLAVA, qwen_backbone(args.qwen_px)]

    load_start = _loadavg()
    t0 = time.perf_counter()
    measured = measure_all(backbones, args, timer, dtype)
    models = {m["backbone"]["name"]: CostModel(**m["cost_model"]) for m in measured}

    rep: dict[str, Any] = {
        "command": "python benchmarks/cost_real_dims.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(device, dtype),
        "quick": args.quick,
        "repeats": args.repeats,
        "map_per_round": args.map_per_round,
        "layers_timed": args.layers_timed,
        "embedded_image_tokens": args.embedded_image_tokens,
        "backbones": measured,
        "reports": [],
        "skipped_inputs": skipped,
    }
    for path, data in reports:
        try:
            shown = str(path.resolve().relative_to(ROOT))
        except ValueError:
            shown = str(path)
        rep["reports"].append(
            {
                "path": shown,
                "benchmark": data.get("benchmark"),
                "limit": data.get("limit"),
                "answer_scheme": data.get("answer_scheme"),
                "command": data.get("command"),
                "seconds": costs_for_report(data, models, args.embedded_image_tokens),
            }
        )
    rep["total_s"] = time.perf_counter() - t0
    rep["loadavg_start"], rep["loadavg_end"] = load_start, _loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    md = render_md(rep)
    (args.out / "report.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

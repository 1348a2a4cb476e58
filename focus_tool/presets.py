"""Per-backbone presets (paper Tab. 7, App. A.3; docs/method.md, Presets per backbone), selectable by name and
overridable per field.

A checkpoint folder may carry a ``focus_preset.json`` (``{"preset": NAME, "overrides": {"proposal.s_max": 3}}``);
the embedded model ships one that names its measured layer range. This is data next to the weights, read the same
way for every checkpoint, not a special case in the pipeline. A baseline may have its own section in the same file
(``"zoomeye": {"cues": ..., "prompts": {...}}``, read by
:func:`focus_tool.baselines.zoomeye.zoomeye_config_for` through :func:`method_section`); any other top-level key is
an error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.config import PIPELINES, AnswerConfig, FocusConfig, ProposalConfig, RankConfig, RelevanceConfig
from focus_tool.errors import ConfigError

PRESETS: dict[str, FocusConfig] = {
    # LLaVA-1.5-7B on V*Bench: layers [14, 32), k 30 (n_steps >= 4), s 3..5, s_dist 2, t_type2 0.6  [paper Tab. 7]
    "llava-1.5": FocusConfig(
        relevance=RelevanceConfig(layers=(14, 32)),
        proposal=ProposalConfig(k=30, s_min=3, s_max=5, s_dist=2.0),
        rank=RankConfig(n_steps=4, overrun=True, t_type2=0.6),
    ),
    # LLaVA-OneVision-7B on V*Bench: layers [21, 28) (Tab. 7 and App. A.3, not §4.1's [14, 28); docs/method.md,
    # Presets per backbone), local anyres grid, Gaussian sigma 1 cell then 2 x 2 average pooling (docs/method.md,
    # Stage III), k 30, s 3..9, s_dist 2, t_type2 0.5  [paper Tab. 7]
    "llava-onevision": FocusConfig(
        relevance=RelevanceConfig(layers=(21, 28), smooth_sigma=1.0, downsample=2),
        proposal=ProposalConfig(k=30, s_min=3, s_max=9, s_dist=2.0),
        rank=RankConfig(n_steps=4, overrun=True, t_type2=0.5),
    ),
    # Qwen2.5-VL-7B: no map settings in the paper (Tab. 5 gives results only); the OV column [docs/method.md,
    # Stage III and Presets per backbone; inferred]. s_max 9: the auto rule (the smallest odd s_max >= the encoder's
    # base resolution / px per map cell, clamped to 5..9; App. A.3's 1-2 x rule made automatic) is not implemented
    # (ProposalConfig.s_max is a fixed int); override per image if needed.
    "qwen2.5-vl": FocusConfig(
        relevance=RelevanceConfig(layers=(21, 28), smooth_sigma=1.0, downsample=2),
        proposal=ProposalConfig(k=30, s_min=3, s_max=9, s_dist=2.0),
        rank=RankConfig(n_steps=4, overrun=True, t_type2=0.5),
    ),
    # Qwen3-VL (2B/4B/8B-Instruct): not in the paper; Qwen2.5-VL's native-resolution layout (all merged tokens are
    # cells, PatchGrid.stretched), so the Qwen2.5-VL / OV column: Gaussian sigma 1 cell then 2 x 2 pooling, k 30,
    # s_min 3, s_dist 2, t_type2 0.5, answer multi [docs/method.md, Stage III and Presets per backbone; inferred].
    # Cells are 32 px (16-px patches merged 2 x 2, vs 28 px). Layers [O//2, O) (layers=None: 14..27 of the 2B's 28,
    # 18..35 of the 4B/8B's 36):
    # App. A.3's "last 25-60 %"; one fixed range cannot be the last quarter of 28 and 36 layers at once, and no range
    # has been measured. DeepStack adds visual features at the image positions after LM layers 0, 1, 2, so the
    # cached image values of every layer >= 3 (all of this range) carry all three additions and layer 0's none; text
    # values never get one; values carry no RoPE (interleaved M-RoPE rotates q/k only); read per KV head (GQA).
    # s_max 9: a V*-sized image (2246 x 1582) is resized to 2240 x 1568 (under the hub's 4096^2 cap), 70 x 49 cells,
    # 64 px per pooled cell; the tower has no fixed base size (its 48 x 48-patch position table = 768 px is resized
    # to any grid), and 9 x 64 = 576 px ~ 0.75 x 768 px, the largest value the auto rule's clamp (5..9) allows.
    # Encoded-image prefix cache: not reusable (M-RoPE positions after the image are model state; adapter docstring).
    "qwen3-vl": FocusConfig(
        relevance=RelevanceConfig(layers=None, smooth_sigma=1.0, downsample=2),
        proposal=ProposalConfig(k=30, s_min=3, s_max=9, s_dist=2.0),
        rank=RankConfig(n_steps=4, overrun=True, t_type2=0.5),
    ),
    # InternVL3 (1B/2B/8B-hf): not in the paper; global-local like OV, so the OV/Qwen column [docs/method.md, Presets
    # per backbone; inferred]. Map: the stitched 448-px tiles, 16 x 16 tokens each (28 x 28 px of a tile per token after
    # pixel shuffle, as a Qwen2.5-VL merged cell); the thumbnail's tokens are not cells. Layers [21, 28): the last
    # quarter of the 28-layer Qwen2.5 LMs of the 2B / 8B (the 1B's 24 layers fall back to [O//2, O) in config_for);
    # values read per KV head.
    # Gaussian sigma 1 cell then 2 x 2 pooling as OV. s_max 5 by the App. A.3 rule: a V*-sized image (2246 x 1582)
    # gets 3 x 2 tiles, 48 x 32 cells, ~94 px per pooled cell; 5 x 94 = 470 px ~ 1.05 x the 448-px tile (7 would be
    # 1.47 x, still in the 1-2 x band; 9 would exceed it). k 30, s_min 3, s_dist 2, t_type2 0.5 (OV); answer: multi.
    "internvl": FocusConfig(
        relevance=RelevanceConfig(layers=(21, 28), smooth_sigma=1.0, downsample=2),
        proposal=ProposalConfig(k=30, s_min=3, s_max=5, s_dist=2.0),
        rank=RankConfig(n_steps=4, overrun=True, t_type2=0.5),
    ),
    # Gemma 3 (4B/12B/27B-it): not in the paper; a global-view model (one 896-px square view, the image stretched, no
    # padding; 16 x 16 = 256 soft tokens, each SigLIP's 4 x 4 patches average-pooled), so the LLaVA-1.5 column: no
    # Gaussian / pooling (a 16 x 16 map has nothing to spare), t_type2 0.6, k 30, s_min 3, s_dist 2 [docs/method.md,
    # Stage III and Presets per backbone; inferred]. Pan-and-scan crops (off on the hub) are extra views outside the
    # map (adapter docstring).
    # Layers [O//2, O) (layers=None: 17..33 of the 4B's 34, 24..47 of the 12B's 48, 31..61 of the 27B's 62): App. A.3's
    # "last 25-60 %", no measured range. Sliding-window layers (5 of 6, window 1024) need no exclusion: a one-image
    # prompt (~300 tokens) lies inside the window, so they see the whole prompt; the adapter's cache keeps every
    # position of them (transformers' default would keep only the last 1023). Values carry no RoPE; read per KV head.
    # s_max 7 by the App. A.3 rule: a V*-sized image (2246 x 1582) has 140 x 99 px cells; 7 x 140 = 980 px ~ 1.1 x the
    # 896-px encoder (5 would be 0.78 x, 9 would be 1.4 x and cover 56 % of the grid side). Answer: multi (Gemma 3
    # takes several images per turn, in order). Encoded-image prefix cache: reusable (the adapter says why).
    "gemma3": FocusConfig(
        relevance=RelevanceConfig(layers=None),
        proposal=ProposalConfig(k=30, s_min=3, s_max=7, s_dist=2.0),
        rank=RankConfig(n_steps=4, overrun=True, t_type2=0.6),
    ),
    # SmolVLM / SmolVLM2 (256M, 500M, 2.2B; Idefics3 family): not in the paper; global-local (tiles + a global image),
    # so the OV column where it fits [docs/method.md, Presets per backbone; inferred]. Map: the stitched tiles, 8 x 8
    # tokens per 512-px tile on the 256M / 500M (4 x 4 patches of 16 px per token after pixel shuffle 4; 9 x 9 per
    # 384-px tile on the 2.2B); the global image and the <fake_token_around_image> / <row_r_col_c> tokens are not cells.
    # Every image's long side is resized to 4 tiles (2048 / 1536 px), so a V*-sized image (2246 x 1582) gets 4 x 3
    # tiles, a 24 x 32 map of ~70 px cells (27 x 36 of ~62 px on the 2.2B). Layers [O//2, O) (layers=None: 15..29 of the
    # 256M's 30, 16..31 of the 500M's 32, 12..23 of the 2.2B's 24): App. A.3's "last 25-60 %", no measured range; Llama
    # values carry no RoPE, read per KV head. Gaussian sigma 1 cell (smooths the tile seams) but no 2 x 2 pooling:
    # 24 x 32 is already as coarse as LLaVA-1.5's unpooled 24 x 24 (pooled it would be 12 x 16, s_min 3 = a quarter of
    # the height).
    # s_max 9 by the App. A.3 rule: 9 x 70 = 630 px ~ 1.23 x the 512-px tile (9 x 62 = 560 ~ 1.46 x 384 on the 2.2B);
    # 7 would be 0.96 x. k 30, s_min 3, s_dist 2, t_type2 0.5 (OV). Answer: multi.
    # CPU (the 256M is the model a CPU user runs): every existence check re-encodes its crop at 2048 px, 4 x 4 tiles +
    # the global image through SigLIP-B/16 at 512 px (~0.2 TFLOP a tile, ~3.7 TFLOP a crop, ~15x the LM's share;
    # parameter x token estimate), so the search budget is cut: n_steps 2 with overrun (OV-7B: Steps-1 overrun keeps
    # 90.57 of Steps-4's 92.15 on V* at 4.05 vs 7.63 FPs, paper Tab. 10), overrun capped at 4 extra crops (a small
    # model that says No everywhere would otherwise score all ~30 proposals), crops batched 2 at a time (34 tiles a
    # forward: the ViT's MLP activations stay under ~0.5 GB in float32), and at most 4 crops in the multi-image answer
    # (each image is up to ~1.1k tokens: 1 + 6 of them would fill ~8k of the LM's 8192 positions).
    "smolvlm": FocusConfig(
        relevance=RelevanceConfig(layers=None, smooth_sigma=1.0, downsample=1),
        proposal=ProposalConfig(k=30, s_min=3, s_max=9, s_dist=2.0),
        rank=RankConfig(n_steps=2, overrun=True, max_overrun=4, rank_batch_size=2, t_type2=0.5),
        answer=AnswerConfig(max_crops=4),
    ),
    # generic fallback: layers [O//2, O) (App. A.3's "last 25-60 %"; docs/method.md, Stage III), LLaVA-1.5's boxes
    "default": FocusConfig(),
}


def apply_overrides(cfg: FocusConfig, overrides: dict[str, Any]) -> FocusConfig:
    """Return ``cfg`` with dotted-path overrides, e.g. ``{"proposal.s_max": 7, "relevance.layers": [0, 2]}``."""
    for key, value in overrides.items():
        group, _, field = key.partition(".")
        if not field or not hasattr(cfg, group):
            raise ConfigError(
                f"unknown setting {key!r}; use GROUP.FIELD with GROUP in targets, relevance, proposal, rank, answer"
            )
        sub = getattr(cfg, group)
        if field not in {f.name for f in dataclasses.fields(sub)}:
            raise ConfigError(
                f"unknown setting {key!r}; {group} has {', '.join(f.name for f in dataclasses.fields(sub))}"
            )
        if isinstance(value, list):
            value = tuple(value)
        cfg = dataclasses.replace(cfg, **{group: dataclasses.replace(sub, **{field: value})})
    return cfg


def pipeline_variant(cfg: FocusConfig, name: str) -> FocusConfig:
    """``cfg`` as the paper's pipeline or as lean FOCUS (docs/method.md, "Adaptive ranking"); "preset": unchanged.

    - paper: the first ``n_steps`` ROIs scored (+ overrun), the argmax answered even below ``rank.found_conf``
      (App. C.1), one prefill per option under the logit scheme;
    - lean: adaptive ranking with the preset's thresholds, options scored on one prefill, nothing selected below
      ``rank.found_conf`` (the answer is then on the whole image, and the status says so).
    """
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}")
    if name == "preset":
        return cfg
    lean = name == "lean"
    return dataclasses.replace(
        cfg,
        rank=dataclasses.replace(cfg.rank, mode="adaptive" if lean else "paper"),
        answer=dataclasses.replace(
            cfg.answer, shared_prefix=lean, on_not_found="full_image" if lean else "best_region"
        ),
    )


def preset(name: str, overrides: dict[str, Any] | None = None) -> FocusConfig:
    """A named preset with optional overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return apply_overrides(PRESETS[name], overrides or {})


PRESET_FILE = "focus_preset.json"
PRESET_KEYS: tuple[str, ...] = ("preset", "overrides", "zoomeye")  # FOCUS preset + overrides, then method sections
METHOD_SECTIONS: tuple[str, ...] = ("zoomeye",)


def read_preset_file(adapter: MLLMAdapter | None, model_path: str | Path | None = None) -> dict[str, Any] | None:
    """The checkpoint's ``focus_preset.json`` (folder ``model_path``, else ``adapter.model_id``), or None if absent.

    With ``adapter=None`` the folder must be given (the eval harness reads it before loading the model).

    Raises:
        ConfigError: the file is not a JSON object, or has a key outside :data:`PRESET_KEYS`.
    """
    if model_path is None and adapter is None:
        raise ConfigError("read_preset_file needs an adapter or a checkpoint folder")
    file = Path(model_path if model_path is not None else adapter.model_id) / PRESET_FILE  # type: ignore[union-attr]
    if not file.is_file():
        return None
    try:
        spec = json.loads(file.read_text())
    except ValueError as e:
        raise ConfigError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{file} must hold a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(PRESET_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {file}; allowed: {', '.join(PRESET_KEYS)}")
    return spec


def method_section(adapter: MLLMAdapter, method: str, model_path: str | Path | None = None) -> dict[str, Any]:
    """A baseline's section of the checkpoint's ``focus_preset.json`` (e.g. ``"zoomeye"``); ``{}`` if none.

    Raises:
        ConfigError: ``method`` has no section type, or its section is not a JSON object.
    """
    if method not in METHOD_SECTIONS:
        raise ConfigError(f"no preset section for method {method!r}; sections: {', '.join(METHOD_SECTIONS)}")
    section = (read_preset_file(adapter, model_path) or {}).get(method, {})
    if not isinstance(section, dict):
        raise ConfigError(f"the {method!r} section of {PRESET_FILE} must be a JSON object, got {section!r}")
    return section


def register_preset(name: str, config: FocusConfig, *, replace: bool = False) -> None:
    """Register ``config`` as the preset ``name`` (the ``preset_name`` a new backbone's adapter declares).

    Args:
        name: The preset name.
        config: The FOCUS configuration of the preset.
        replace: Allow replacing an existing preset of that name.

    Raises:
        ConfigError: ``name`` is taken and ``replace`` is false, or ``config`` is not a FocusConfig.
    """
    if not isinstance(config, FocusConfig):
        raise ConfigError(f"preset {name!r} must be a FocusConfig, got {type(config).__name__}")
    if name in PRESETS and not replace:
        raise ConfigError(f"preset {name!r} is already registered; pass replace=True to replace it")
    PRESETS[name] = config


def unregister_preset(name: str) -> None:
    """Remove the preset ``name`` (a no-op when it is not registered); for plugins' tests."""
    PRESETS.pop(name, None)


def config_for(adapter: MLLMAdapter, model_path: str | Path | None = None) -> FocusConfig:
    """The preset for a loaded model: the checkpoint's ``focus_preset.json`` if any, else by architecture."""
    spec = read_preset_file(adapter, model_path)
    if spec is not None:
        return preset(spec.get("preset", "default"), spec.get("overrides", {}))
    if adapter.preset_name not in PRESETS:
        raise ConfigError(
            f"{type(adapter).__name__} names the preset {adapter.preset_name!r}, which is not registered; "
            f"known: {', '.join(sorted(PRESETS))} (see focus_tool.presets.register_preset)"
        )
    cfg = PRESETS[adapter.preset_name]
    layers = cfg.relevance.layers
    if layers is not None and layers[1] > adapter.num_layers:  # a smaller model of the family: [O//2, O)
        cfg = dataclasses.replace(cfg, relevance=dataclasses.replace(cfg.relevance, layers=None))
    return cfg

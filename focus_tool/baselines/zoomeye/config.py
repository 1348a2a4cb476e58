"""ZoomEye's hyperparameters (upstream om-ai-lab/ZoomEye ``ZoomEye/eval/perform_zoom_eye.py``), the per-backbone
table and the per-checkpoint section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.zoomeye.prompts import CUE_SOURCES, CueSource, InputMode, ZoomEyePrompts
from focus_tool.config import TargetConfig
from focus_tool.errors import ConfigError
from focus_tool.ops.images import CLIP_MEAN_RGB
from focus_tool.presets import config_for, method_section


@dataclass(frozen=True, kw_only=True)
class ZoomEyeConfig:
    """ZoomEye's hyperparameters (upstream ``eval/perform_zoom_eye.py``); defaults are LLaVA-1.5's (Local input).
    Per backbone: :func:`zoomeye_config_for`.
    """

    input_mode: InputMode | None = None  # None: "global_local" for answer_mode "multi" adapters, else "local"
    patch_size: int | None = None  # None = the adapter's encoder input side (336 LLaVA-1.5, 384 OV tile)
    patch_scale: float | None = None  # crop box scale after the min-size expansion; None for LLaVA-1.5
    bias: float = 0.2  # b in w(d); 0.6 for LLaVA-OV / Qwen2.5-VL / InternVL2.5
    answer_upper: float = 0.6  # tau_upper
    answer_lower: float = 0.0  # tau_lower
    decrements: tuple[float, ...] = (0.1, 0.1, 0.2)
    pop_limit_per_depth: int = 3  # pop_limit = 3 * D
    num_interval: int = 2  # pop_limit increment on each relaxation
    depth_limit: int = 5
    split_num: Literal[4, 9, 16] = 4
    visual_cue_threshold: float = 0.6  # type-2 keep threshold
    type2_depth: int = 2
    max_targets: int = 4  # [I] cap on extracted cues
    cue_max_new_tokens: int = 64
    answer_max_new_tokens: int = 16
    # Global+Local only: the main image is the padded square at patch_size^2 ("square", LLaVA-OV) or the image with
    # its aspect kept and long side patch_size ("aspect", Qwen2.5-VL); pad colour = the processor's mean colour
    main_view: Literal["square", "aspect"] = "square"
    pad_rgb: tuple[int, int, int] = CLIP_MEAN_RGB  # (127, 127, 127) for SigLIP (LLaVA-OV)
    box_color: Literal["auto", "red", "blue"] = "auto"  # auto: blue if the question mentions a "red rectangle"
    merge_buffer_px: int = 50  # expanded patches closer than 2x this are merged for the final answer
    # where the visual cues come from: "prompt" = ZoomEye's own extraction prompt (prompts.cue, official); or
    # "focus_extraction" = FOCUS's Stage-I prompt and parse_targets with ``targets`` (one extraction pass either
    # way), for checkpoints that cannot answer the official prompt [deviation, per checkpoint]
    cues: CueSource = "prompt"
    prompts: ZoomEyePrompts = field(default_factory=ZoomEyePrompts)
    targets: TargetConfig = field(default_factory=TargetConfig)  # Stage-I settings for cues="focus_extraction"

    def __post_init__(self) -> None:
        if self.cues not in CUE_SOURCES:
            raise ConfigError(f"cues must be one of {', '.join(CUE_SOURCES)}, got {self.cues!r}")
        if self.depth_limit < 1:
            raise ConfigError(f"depth_limit must be >= 1, got {self.depth_limit}")
        if not self.decrements or any(d <= 0 for d in self.decrements):
            raise ConfigError(f"decrements must be positive and non-empty, got {self.decrements}")
        if self.patch_size is not None and self.patch_size < 2:
            raise ConfigError(f"patch_size must be >= 2, got {self.patch_size}")


ZOOMEYE_PRESETS: dict[str, ZoomEyeConfig] = {
    # om-ai-lab/ZoomEye's ZoomEye/eval/perform_zoom_eye.py; keyed by the adapter's preset_name
    "llava-1.5": ZoomEyeConfig(input_mode="local"),
    "llava-onevision": ZoomEyeConfig(
        input_mode="global_local", patch_scale=1.2, bias=0.6, main_view="square", pad_rgb=(127, 127, 127)
    ),
    "qwen2.5-vl": ZoomEyeConfig(
        input_mode="global_local",
        patch_size=448,  # hard-coded input size in ZoomModelQwenVL
        patch_scale=1.2,
        bias=0.6,
        answer_upper=0.95,
        decrements=(0.05, 0.1, 0.2),
        main_view="aspect",
    ),
    # no tuned ZoomEye settings yet: the generic defaults (Local input unless the adapter answers "multi")
    "qwen3-vl": ZoomEyeConfig(),
    "internvl": ZoomEyeConfig(),
    # 336: the patch side this backbone has always searched with (the fallback before encoder_px, which is 896 on
    # Gemma 3); kept so the figures do not move
    "gemma3": ZoomEyeConfig(patch_size=336),
    "smolvlm": ZoomEyeConfig(),
    "default": ZoomEyeConfig(),
}


def register_zoomeye_preset(name: str, config: ZoomEyeConfig, *, replace: bool = False) -> None:
    """Add ZoomEye's settings for a preset registered with :func:`focus_tool.presets.register_preset`.

    Args:
        name: the preset name (the adapter's ``preset_name``).
        config: ZoomEye's settings for that backbone; ``ZoomEyeConfig()`` for the generic ones.
        replace: replace an existing row instead of refusing.

    Raises:
        ConfigError: ``config`` is not a ZoomEyeConfig, or ``name`` has a row and ``replace`` is false.
    """
    if not isinstance(config, ZoomEyeConfig):
        raise ConfigError(f"ZoomEye preset {name!r} must be a ZoomEyeConfig, got {type(config).__name__}")
    if name in ZOOMEYE_PRESETS and not replace:
        raise ConfigError(f"ZoomEye preset {name!r} is already registered; pass replace=True to replace it")
    ZOOMEYE_PRESETS[name] = config


ZOOMEYE_SECTION_KEYS: tuple[str, ...] = ("cues", "prompts")


def apply_zoomeye_section(cfg: ZoomEyeConfig, section: Mapping[str, Any]) -> ZoomEyeConfig:
    """``cfg`` with a checkpoint's ``"zoomeye"`` preset section applied.

    Args:
        cfg: the backbone's settings.
        section: ``{"cues": "prompt" | "focus_extraction", "prompts": {NAME: TEMPLATE}}``, both keys optional; NAME
            is a :class:`ZoomEyePrompts` field, TEMPLATE uses only that prompt's named fields.

    Raises:
        ConfigError: an unknown key, cue source or prompt name, or an invalid template.
    """
    where = "in the 'zoomeye' section of focus_preset.json"
    unknown = sorted(set(section) - set(ZOOMEYE_SECTION_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} {where}; allowed: {', '.join(ZOOMEYE_SECTION_KEYS)}")
    changes: dict[str, Any] = {}
    if "cues" in section:
        if section["cues"] not in CUE_SOURCES:
            raise ConfigError(f"'cues' {where} must be one of {', '.join(CUE_SOURCES)}, got {section['cues']!r}")
        changes["cues"] = section["cues"]
    if "prompts" in section:
        prompts = section["prompts"]
        if not isinstance(prompts, Mapping):
            raise ConfigError(f"'prompts' {where} must be an object of NAME: TEMPLATE, got {prompts!r}")
        names = [f.name for f in fields(ZoomEyePrompts)]
        bad = sorted(set(prompts) - set(names))
        if bad:
            raise ConfigError(f"unknown prompt name(s) {bad} {where}; allowed: {', '.join(names)}")
        changes["prompts"] = replace(cfg.prompts, **prompts)  # validated by ZoomEyePrompts.__post_init__
    return replace(cfg, **changes)


def zoomeye_config_for(
    adapter: MLLMAdapter, *, depth_limit: int | None = None, model_path: str | Path | None = None
) -> ZoomEyeConfig:
    """ZoomEye's settings for a loaded model: the backbone's (upstream ``perform_zoom_eye.py``,
    :data:`ZOOMEYE_PRESETS`), then the checkpoint's ``"zoomeye"`` section of ``focus_preset.json``
    (:func:`apply_zoomeye_section`; folder ``model_path``, else ``adapter.model_id``), with FOCUS's Stage-I settings of
    the same checkpoint as ``targets``.

    The section exists for checkpoints that cannot read ZoomEye's official prompts; it changes what is asked, never
    the search (tree, priority, thresholds, pass counts). The embedded card-world model
    (``focus_tool/embedded/model``) has a closed vocabulary (MODEL_CARD.md, "Vocabulary"): it answers Yes/No only to
    "Is there a {colour} card in the image?", and names targets only for FOCUS's Stage-I prompt, so its section is
    ``cues: focus_extraction`` and that existence question for the existence, latent and answering prompts.
    **Deviation, stated plainly:** the model can express existence only, so on it ZoomEye's latent confidence ("could
    it be found by zooming further?") and answering confidence ("could you answer the question from this view?")
    collapse to existence. The priority ``w e + (1 - w) l`` becomes ``e`` at every depth (the latent pass is still
    paid, 2 passes per queued node as in ZoomEye), and the search stops at the first popped view whose existence
    confidence reaches ``tau`` (the root included), not where the question becomes answerable: a view where the card
    is seen but its dots are too small to read can stop the search.

    Raises:
        ConfigError: the adapter's preset has no :data:`ZOOMEYE_PRESETS` row (:func:`register_zoomeye_preset`), or
            a malformed ``focus_preset.json`` or ``"zoomeye"`` section.
    """
    name = adapter.preset_name
    if name not in ZOOMEYE_PRESETS:
        raise ConfigError(
            f"no ZoomEye settings for preset {name!r}; add them with "
            f"focus_tool.baselines.zoomeye.register_zoomeye_preset({name!r}, ZoomEyeConfig(...)) "
            f"(ZoomEyeConfig() for the generic ones); known: {', '.join(sorted(ZOOMEYE_PRESETS))}"
        )
    cfg = ZOOMEYE_PRESETS[name]
    # per-checkpoint data next to the weights, as for FOCUS's preset: no model is special-cased here
    cfg = apply_zoomeye_section(cfg, method_section(adapter, "zoomeye", model_path))
    cfg = replace(cfg, targets=config_for(adapter, model_path).targets)  # the same Stage I as FOCUS on this model
    return cfg if depth_limit is None else replace(cfg, depth_limit=depth_limit)

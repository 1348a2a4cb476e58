"""ZoomEye (arXiv 2411.16044, github.com/om-ai-lab/ZoomEye @ 6762d79): confidence-ranked tree search over crops.

Faithful to ``ZoomEye/zoom_eye.py::zoom_eye_search_type1`` as documented in ``shared/docs/peers.md`` §1:

- **Tree** (§1.2): a node is terminal when ``max(w, h) < patch_size`` (the vision encoder's input side); otherwise it
  splits into ``split_num`` equal sub-patches, the last row/column absorbing the remainder (2x2; a 1-column x 4-row
  stack when h / w >= 2, 4 columns x 1 row when h / w <= 0.5 [I: our reading of "1x4"]). Search depth
  ``D = min(tree depth, depth_limit)``.
- **Confidences** (§1.3): one forward each, ``c = 2 * (softmax(l_Yes, l_No)[Yes] - 0.5) = tanh((l_Yes - l_No) / 2)``.
  Two input modes (``ZoomEyeConfig.input_mode``; by default from the adapter: ``answer_mode == "multi"``, i.e. the
  anyres / native-resolution OneVision and Qwen2.5-VL adapters, runs Global+Local, LLaVA-1.5 runs Local):

  - *Local* (``ZoomModelLocal``): the node's expanded patch alone, through :meth:`MLLMAdapter.yes_no_margins`.
  - *Global+Local* (``ZoomModelGlobalLocal`` / ``ZoomModelQwenVL``): the root is the full image alone (the adapter's
    own anyres / native resolution) with the "global" prompts; any other node is two images in one turn, through
    :meth:`MLLMAdapter.yes_no_margins_interleaved`: the main image (the image padded to a square, the node's
    expanded patch outlined, resized to ``patch_size`` square for OneVision or to long side ``patch_size`` with the
    aspect kept for Qwen2.5-VL) with "This is the main image, and the section enclosed by the red rectangle is the
    focus region.", then the zoomed-in view (the outlined patch cut from the padded square, outline included) with
    "This is the zoomed-in view of the focus region.", then the "zoomed-in view" prompt (answering: the Local one).
- **Priority** (§1.4): ``w(d) * c_exist + (1 - w(d)) * c_latent`` with ``w(d) = b + (1 - b) * (d / D)^2``, computed
  once per node (2 passes) when the node first sits in a queue that is sorted.
- **Loop** (§1.5): pop the best node, answering confidence (1 pass), stop at ``>= tau``; after ``pop_limit`` pops
  relax ``tau`` by the next decrement, raise ``pop_limit`` by ``num_interval`` and accept the best popped node
  above the new ``tau``; give up below ``tau_lower``. Several targets: the decomposed question
  "What is the appearance of the {t}?", ``force_visit_bottom`` and, in Local mode only, ``force_no_root``.
- **Root filter** (§1.6, Global+Local only): with several cues, the answering confidence of each ordinary cue's
  decomposed question on the root's small view (the padded square, or the aspect-kept image, at ``patch_size``);
  if any reaches ``tau_upper`` no cue is searched and the answer uses the full image (k passes).
- **Type-2 cues** ("all X", §1.6): post-order traversal to depth 2, existence of every node (1 pass each), keep a
  node when its existence >= max(best existence below it, ``visual_cue_threshold``).
- **Final answer** (§1.7): Local: the union of the found nodes' expanded boxes, or the full image if none.
  Global+Local: the full image alone if nothing was found (or the root was), else the main image with every found
  patch outlined (overlapping patches merged, 50-px buffer) and the zoomed-in view of their union, with the same
  two captions before the question (letter: generated; logit: one pass per option).

Choices where the docs leave a gap (marked [I]): when the relaxed threshold admits no popped node, earlier candidates
(from a ``force_visit_bottom`` stop) are kept; the cue-extraction call has no in-context examples (ZoomEye's
``ic_examples/*.json`` are not vendored) and pronouns are dropped with a word list instead of spaCy; at most
``max_targets`` cues are searched. Global+Local: the outline is ``max(1, S // 120)`` px wide on the S-px padded square
(upstream ``S // 120``, which draws nothing below 120 px); ``box_color="auto"`` draws blue when the question mentions a
"red rectangle" (peers.md §1.3) and the caption names the colour drawn (upstream as released always draws and says
red: its switch assigns a local variable); its confidences run one forward per prompt (no batching across prompts);
the Local mode's two-block canvas for far-apart boxes (``union_blocks_independent``) is not reproduced. When no cue
parses from the extraction reply, nothing is searched and the answer uses the full image (peers.md documents no
fallback; upstream ``get_zoom_eye_response`` does the same); a warning is logged.

Per-checkpoint adaptation [deviation, off by default]: a checkpoint's ``focus_preset.json`` may carry a ``"zoomeye"``
section (:func:`zoomeye_config_for`) that takes the visual cues from FOCUS's Stage-I prompt instead of ZoomEye's
(``ZoomEyeConfig.cues``) and replaces the wording of any prompt (:class:`ZoomEyePrompts`), for models that cannot
read the official prompts (the embedded card-world model's closed vocabulary). The search itself is unchanged.
"""

from __future__ import annotations

import logging
import math
import re
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, ImageDraw

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on, answer_on_parts
from focus_tool.config import TargetConfig
from focus_tool.errors import ConfigError
from focus_tool.ops.images import CLIP_MEAN_RGB
from focus_tool.presets import config_for, method_section
from focus_tool.result import FocusResult, ForwardPasses, Region
from focus_tool.steps.targets import extraction_prompt, parse_targets

logger = logging.getLogger(__name__)

# The official prompts (peers.md §1.3, §1.6), verbatim except that the format fields are named: {target} is the visual
# cue, {question} the question (or the decomposed one). Every one can be overridden per checkpoint (ZoomEyePrompts).
EXISTENCE = "Is there a {target} in the image? Answer Yes or No."
LATENT = (
    "According to your common sense knowledge and the content of the image, is it possible to find a {target} in the "
    "image? Answer Yes or No and tell the reason."
)
ANSWERING = (  # the doubled "the" is in the original
    "Question: {question}\nCould you answer the question based on the the available visual information? Answer Yes "
    "or No."
)
# Global+Local input (ZoomModelGlobalLocal): the root alone ("global") and any other node as main image + zoomed view
LATENT_ROOT = (
    "According to your common sense knowledge and the content of image, is it possible to find a {target} by further "
    "zooming in the image? Answer Yes or No and tell the reason."
)
EXISTENCE_NODE = "Is there a {target} in the zoomed-in view? Answer Yes or No."
LATENT_NODE = (
    "According to your common sense knowledge and the content of the zoomed-in view, along with its location in the "
    "image, is it possible to find a {target} by further zooming in the current view? Answer Yes or No and tell the "
    "reason."
)
MAIN_CAPTION = "This is the main image, and the section enclosed by the {} rectangle is the focus region."
ZOOM_CAPTION = "This is the zoomed-in view of the focus region."
ConfidenceKind = Literal["existence", "latent", "answering"]
BOX_RGB: dict[str, tuple[int, int, int]] = {"red": (255, 0, 0), "blue": (0, 0, 255)}
DECOMPOSED = "What is the appearance of the {target}?"
CUE_PROMPT = "Question: {question}\nIf you want to answer the question, which objects' information do you need?"
CueSource = Literal["prompt", "focus_extraction"]
CUE_SOURCES: tuple[str, ...] = ("prompt", "focus_extraction")
_PRONOUNS = frozenset(
    [
        "it",
        "its",
        "they",
        "them",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "him",
        "her",
        "i",
        "you",
        "we",
        "us",
        "me",
        "one",
    ]
)


InputMode = Literal["local", "global_local"]
# the format fields each prompt may use; at least one of them is required (a prompt without one asks the same thing
# of every cue / question)
PROMPT_FIELDS: dict[str, frozenset[str]] = {
    "cue": frozenset({"question"}),
    "decomposed": frozenset({"target"}),
    "existence": frozenset({"target"}),
    "latent": frozenset({"target"}),
    "answering": frozenset({"question", "target"}),
    "latent_root": frozenset({"target"}),
    "existence_node": frozenset({"target"}),
    "latent_node": frozenset({"target"}),
}


@dataclass(frozen=True, kw_only=True)
class ZoomEyePrompts:
    """Every prompt ZoomEye asks, as a template with named fields; the defaults are the official ones (peers.md §1.3,
    §1.6). ``{target}`` is the visual cue (for a type-2 cue "all cars": "car"), ``{question}`` the question asked.

    Which prompt a confidence uses: Local input: ``existence`` / ``latent`` / ``answering``. Global+Local input: the
    root (full image alone) ``existence`` / ``latent_root`` / ``answering``, any other node ``existence_node`` /
    ``latent_node`` / ``answering``. ``answering`` gets the question (or, with several cues, the ``decomposed``
    question about the cue) in ``{question}`` and the cue in ``{target}``. ``cue`` is the visual-cue extraction
    prompt (``ZoomEyeConfig.cues == "prompt"``). The two captions of the Global+Local view are statements, not
    questions, and stay fixed.

    Overriding them is a deviation from ZoomEye, for checkpoints that cannot read the official wording (a closed
    vocabulary): the search algorithm is unchanged, only what each confidence asks. See
    ``focus_tool/embedded/model/focus_preset.json`` and :func:`zoomeye_config_for`.
    """

    cue: str = CUE_PROMPT
    decomposed: str = DECOMPOSED
    existence: str = EXISTENCE
    latent: str = LATENT
    answering: str = ANSWERING
    latent_root: str = LATENT_ROOT
    existence_node: str = EXISTENCE_NODE
    latent_node: str = LATENT_NODE

    def __post_init__(self) -> None:
        for name, allowed in PROMPT_FIELDS.items():
            template = getattr(self, name)
            if not isinstance(template, str):
                raise ConfigError(f"ZoomEye prompt {name!r} must be a string, got {type(template).__name__}")
            used = _format_fields(name, template)
            if not used <= allowed or not used:
                raise ConfigError(
                    f"ZoomEye prompt {name!r} must use {' and/or '.join('{' + f + '}' for f in sorted(allowed))} "
                    f"and no other field, got {sorted(used) or 'none'} in {template!r}"
                )

    def confidence_template(self, kind: ConfidenceKind, where: Literal["local", "root", "node"]) -> str:
        """The template of a ``kind`` confidence for a Local node, the Global+Local root, or another Global+Local
        node."""
        if kind == "answering":
            return self.answering
        if where == "node":
            return self.existence_node if kind == "existence" else self.latent_node
        if kind == "existence":
            return self.existence
        return self.latent_root if where == "root" else self.latent


def _format_fields(name: str, template: str) -> set[str]:
    """The named fields of a ``str.format`` template; positional (``{}``, ``{0}``) or malformed ones are errors."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"ZoomEye prompt {name!r} is not a valid template ({e}): {template!r}") from None
    names = {f for _, f, _, _ in parsed if f is not None}
    bad = sorted(f for f in names if not f.isidentifier())
    if bad:
        raise ConfigError(
            f"ZoomEye prompt {name!r} must use named fields such as {{target}}, got {bad} in {template!r}"
        )
    return names


@dataclass(frozen=True, kw_only=True)
class ZoomEyeConfig:
    """ZoomEye's hyperparameters (peers.md §1.8); defaults are LLaVA-1.5's (Local input). Per backbone:
    :func:`zoomeye_config_for`."""

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
    # "focus_extraction" = FOCUS's Stage-I prompt and parse_targets with ``targets`` (one aux pass either way), for
    # checkpoints that cannot answer the official prompt [deviation, per checkpoint]
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
    # peers.md §1.8, ZoomEye/eval/perform_zoom_eye.py; keyed by the adapter's preset_name
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
}


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
    """ZoomEye's settings for a loaded model: the backbone's (peers.md §1.8; unknown backbones get the defaults),
    then the checkpoint's ``"zoomeye"`` section of ``focus_preset.json`` (:func:`apply_zoomeye_section`; folder
    ``model_path``, else ``adapter.model_id``), with FOCUS's Stage-I settings of the same checkpoint as ``targets``.

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
        ConfigError: a malformed ``focus_preset.json`` or ``"zoomeye"`` section.
    """
    cfg = ZOOMEYE_PRESETS.get(str(getattr(adapter, "preset_name", "")), ZoomEyeConfig())
    # per-checkpoint data next to the weights, as for FOCUS's preset: no model is special-cased here
    cfg = apply_zoomeye_section(cfg, method_section(adapter, "zoomeye", model_path))
    cfg = replace(cfg, targets=config_for(adapter, model_path).targets)  # the same Stage I as FOCUS on this model
    return cfg if depth_limit is None else replace(cfg, depth_limit=depth_limit)


@dataclass(eq=False)
class Node:
    """A tree node: ``bbox`` is ``[x, y, w, h]`` in original-image pixels; children are made on first access."""

    bbox: tuple[int, int, int, int]
    depth: int
    name: str
    patch_size: int
    split_num: int
    _children: list[Node] | None = field(default=None, repr=False)

    @property
    def is_leaf(self) -> bool:
        """Terminal: ``max(w, h) < patch_size``."""
        return max(self.bbox[2], self.bbox[3]) < self.patch_size

    @property
    def children(self) -> list[Node]:
        """Row-major sub-patches (empty for a leaf)."""
        if self._children is None:
            self._children = [] if self.is_leaf else self._split()
        return self._children

    def _split(self) -> list[Node]:
        x, y, w, h = self.bbox
        rows, cols = split_grid(w, h, self.split_num)
        sw, sh = w // cols, h // rows
        out = []
        for r in range(rows):
            for c in range(cols):
                cw = sw if c < cols - 1 else w - sw * (cols - 1)
                ch = sh if r < rows - 1 else h - sh * (rows - 1)
                out.append(
                    Node(
                        (x + c * sw, y + r * sh, cw, ch),
                        self.depth + 1,
                        f"{self.name}.{r * cols + c}",
                        self.patch_size,
                        self.split_num,
                    )
                )
        return out

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """The box as ``(x0, y0, x1, y1)``."""
        x, y, w, h = self.bbox
        return x, y, x + w, y + h


def split_grid(w: int, h: int, split_num: int) -> tuple[int, int]:
    """(rows, cols) of the split: square grid, or the elongated variant for aspect ratios >= 2 or <= 0.5."""
    ratio = h / max(w, 1)
    elongated = {4: (4, 1), 9: (4, 2), 16: (8, 2)}[split_num]
    if ratio >= 2:
        return elongated
    if ratio <= 0.5:
        return elongated[1], elongated[0]
    side = math.isqrt(split_num)
    return side, side


def tree_depth(w: int, h: int, patch_size: int, split_num: int) -> int:
    """Depth of the full tree over a ``w`` x ``h`` image (the largest child is the last one)."""
    depth = 0
    while max(w, h) >= patch_size:
        rows, cols = split_grid(w, h, split_num)
        w, h = w - (w // cols) * (cols - 1), h - (h // rows) * (rows - 1)
        depth += 1
    return depth


def confidence(margins: torch.Tensor) -> list[float]:
    """ZoomEye's confidence ``2 * (p_Yes - 0.5)`` from ``l_Yes - l_No`` margins (n,)."""
    return [float(v) for v in torch.tanh(margins.double() / 2)]


def priority_weight(depth: int, max_depth: int, bias: float) -> float:
    """w(d) = b + (1 - b) * (d / D)^2."""
    return bias + (1 - bias) * (depth / max_depth) ** 2 if max_depth > 0 else 1.0


def parse_cues(reply: str, max_targets: int) -> list[str]:
    """Visual cues from the extraction reply ("... the following objects: A and B."), pronouns dropped."""
    text = reply.strip()
    m = re.search(r"following objects?\s*:?\s*(.*)", text, flags=re.IGNORECASE | re.DOTALL)
    if m:
        text = m.group(1)
    text = text.split("\n")[0].strip().rstrip(".").strip()
    cues: list[str] = []
    for part in re.split(r" and |, ", text):
        cue = part.strip().strip(".").strip()
        words = cue.lower().split()
        if not words or any(w in _PRONOUNS for w in words) or len(words) > 6:
            continue
        if cue not in cues:
            cues.append(cue)
    return cues[:max_targets]


@dataclass(frozen=True)
class VisualCue:
    """One visual cue: ``text`` as extracted ("all cars" marks a type-2 cue), ``name`` the object the prompts are
    filled with ("car"), ``all_instances`` True for type 2."""

    text: str
    name: str
    all_instances: bool = False

    @classmethod
    def from_text(cls, text: str) -> VisualCue:
        """ZoomEye's reading of a cue string: "all X" is type 2, with the plural "s" stripped naively (as upstream)."""
        if text.lower().startswith("all "):
            name = text[4:].strip()
            return cls(text, name[:-1] if name.endswith("s") else name, True)
        return cls(text, text)


Box = tuple[int, int, int, int]


def merge_boxes(boxes: Sequence[Box], buffer_px: int) -> list[Box]:
    """ZoomEye's ``merge_bbox_list``: merge any two xyxy boxes whose ``buffer_px``-grown copies overlap, until none do.

    Each pass walks the boxes in list order and merges each unused box with the first other unused box it touches
    (upstream ``threshold=0``: any overlap of the grown boxes merges).
    """
    out = list(boxes)
    changed = True
    while changed:
        changed = False
        merged: list[Box] = []
        used: set[int] = set()
        for i, a in enumerate(out):
            if i in used:
                continue
            for j, b in enumerate(out):
                if j == i or j in used:
                    continue
                if min(a[2], b[2]) + buffer_px > max(a[0], b[0]) - buffer_px and (
                    min(a[3], b[3]) + buffer_px > max(a[1], b[1]) - buffer_px
                ):
                    merged.append((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
                    used.update((i, j))
                    changed = True
                    break
            else:
                merged.append(a)
        out = merged
    return out


def _padded_square(image: Image.Image, fill: tuple[int, int, int]) -> tuple[Image.Image, int, int]:
    """A new square canvas of side max(W, H) with ``image`` centred (``expand2square``); returns it and (left, top)."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    s = max(w, h)
    left, top = (s - w) // 2, (s - h) // 2
    square = Image.new("RGB", (s, s), fill)
    square.paste(rgb, (left, top))
    return square, left, top


def _aspect_resize(image: Image.Image, long_px: int) -> Image.Image:
    """``image`` resized so its long side is ``long_px`` (ZoomModelQwenVL.resize_image)."""
    w, h = image.size
    size = (long_px, int(h * long_px / w)) if w > h else (int(w * long_px / h), long_px)
    return image.resize((max(1, size[0]), max(1, size[1])))


def root_view(
    image: Image.Image, *, main_px: int, main_view: Literal["square", "aspect"], fill: tuple[int, int, int]
) -> Image.Image:
    """The root's small view for the root filter (upstream ``root_anyres=False``): square or aspect-kept at main_px."""
    if main_view == "aspect":
        return _aspect_resize(image.convert("RGB"), main_px)
    return _padded_square(image, fill)[0].resize((main_px, main_px))


@dataclass(frozen=True)
class ZoomViews:
    """The two images of a Global+Local prompt and the boxes they show.

    Attributes:
        main: the main image with every (merged) patch outlined, at ``main_px``.
        zoom: the zoomed-in view: the union of the outlined boxes cut from the padded square, outline included.
        boxes_xyxy: the merged patches, original-image pixels.
        zoom_xyxy: the zoomed view's box in the padded square's pixels.
    """

    main: Image.Image
    zoom: Image.Image
    boxes_xyxy: list[Box]
    zoom_xyxy: Box


def zoom_views(
    image: Image.Image,
    patches: Sequence[Box],
    *,
    main_px: int,
    main_view: Literal["square", "aspect"],
    colour: Literal["red", "blue"],
    fill: tuple[int, int, int],
    merge_buffer_px: int,
) -> ZoomViews:
    """ZoomModelGlobalLocal / ZoomModelQwenVL ``process_nodes_to_image_list`` for non-root nodes.

    Args:
        image: the original image (W, H).
        patches: the nodes' expanded patches, xyxy in original-image pixels.
        main_px: the encoder input side (the main image's side, or long side for ``"aspect"``).
        main_view: ``"square"``: the padded square resized to main_px x main_px (LLaVA-OV); ``"aspect"``: the
            image area of the square, resized to long side main_px (Qwen2.5-VL).
        colour: the outline colour.
        fill: the padding colour of the square.
        merge_buffer_px: patches whose grown copies touch are merged first (:func:`merge_boxes`).

    The outline, ``t = max(1, S // 120)`` px wide on the S-px square, is drawn on the box grown by t (clipped to the
    square); the zoomed view is that grown box (of all boxes' union) cut from the drawn square.
    """
    if not patches:
        raise ValueError("zoom_views needs at least one patch")
    merged = merge_boxes(patches, merge_buffer_px)
    square, left, top = _padded_square(image, fill)
    side = square.width
    t = max(1, side // 120)
    draw = ImageDraw.Draw(square)
    grown: list[Box] = []
    for x0, y0, x1, y1 in merged:
        g = (max(0, x0 + left - t), max(0, y0 + top - t), min(side, x1 + left + t), min(side, y1 + top + t))
        draw.rectangle(g, outline=BOX_RGB[colour], width=t)
        grown.append(g)
    zoom_box = (min(g[0] for g in grown), min(g[1] for g in grown), max(g[2] for g in grown), max(g[3] for g in grown))
    zoom = square.crop(zoom_box)
    if main_view == "aspect":
        w, h = image.size
        main = _aspect_resize(square.crop((left, top, left + w, top + h)), main_px)
    else:
        main = square.resize((main_px, main_px))
    return ZoomViews(main, zoom, merged, zoom_box)


Event = Literal["pop", "stop", "relax_accept", "relax_continue", "give_up", "bottom_stop"]
"""pop: kept searching; stop: confident, done; relax_accept / relax_continue / give_up: the budget ran out and the
threshold was relaxed (a popped node accepted / search goes on / tau fell below tau_lower); bottom_stop: a candidate
was held back until a bottom node was visited (several cues)."""


@dataclass(frozen=True)
class TraceStep:
    """One pop of the search: the node, its answering confidence (None if not asked), the threshold in force."""

    node: str
    answering: float | None
    tau: float
    event: Event = "pop"
    new_tau: float | None = None


@dataclass
class SearchOutcome:
    """The result of one type-1 search: the chosen node (or None) and the step-by-step trace."""

    node: Node | None
    trace: list[TraceStep]
    pops: int
    max_depth: int


class ZoomEyeMethod:
    """ZoomEye over any adapter with ``yes_no_margins`` and ``generate`` (Local input), plus the interleaved
    multi-image methods for the Global+Local input."""

    name = "zoomeye"

    def __init__(self, adapter: MLLMAdapter, config: ZoomEyeConfig | None = None) -> None:
        self.adapter = adapter
        self.config = config or ZoomEyeConfig()
        side = getattr(adapter, "input_px", None) or getattr(adapter, "tile_px", None) or 336
        self.patch_size = self.config.patch_size or int(side)
        self.input_mode: InputMode = self.config.input_mode or (
            "global_local" if adapter.answer_mode == "multi" else "local"
        )
        self._warned_no_cue = False

    # ------------------------------------------------------------------ model calls (all counted by the adapter)

    def _confidences(
        self,
        image: Image.Image,
        nodes: Sequence[Node],
        kind: ConfidenceKind,
        *,
        target: str,
        question: str = "",
        colour: Literal["red", "blue"] = "red",
    ) -> list[float]:
        """ZoomEye confidences of ``kind`` for ``nodes`` in the configured input mode; the prompt
        (:meth:`ZoomEyePrompts.confidence_template`) is filled with the cue ``target`` and ``question``."""
        if not nodes:
            return []
        prompts = self.config.prompts

        def text(where: Literal["local", "root", "node"]) -> str:
            return prompts.confidence_template(kind, where).format(target=target, question=question)

        with self.adapter.counter.in_phase("search"):
            if self.input_mode == "local":
                crops = [self.node_crop(image, n) for n in nodes]
                return confidence(self.adapter.yes_no_margins(crops, [text("local")] * len(nodes)))
            out: dict[int, float] = {}
            roots = [i for i, n in enumerate(nodes) if n.depth == 0]
            if roots:  # the root alone, at the adapter's own (anyres / native) resolution, "global" prompts
                texts = [text("root")] * len(roots)
                out.update(
                    zip(roots, confidence(self.adapter.yes_no_margins([image] * len(roots), texts)), strict=True)
                )
            others = [i for i, n in enumerate(nodes) if n.depth > 0]
            if others:
                node_text = text("node")
                parts = [[*self.zoom_parts(image, [nodes[i]], colour=colour)[0], node_text] for i in others]
                out.update(zip(others, confidence(self.adapter.yes_no_margins_interleaved(parts)), strict=True))
            return [out[i] for i in range(len(nodes))]

    def zoom_parts(
        self, image: Image.Image, nodes: Sequence[Node], *, colour: Literal["red", "blue"]
    ) -> tuple[list[Image.Image | str], ZoomViews]:
        """Global+Local prompt head for non-root ``nodes``: [main, main caption, zoomed view, zoom caption]."""
        cfg = self.config
        views = zoom_views(
            image,
            [self.crop_box(n, image.size) for n in nodes],
            main_px=self.patch_size,
            main_view=cfg.main_view,
            colour=colour,
            fill=cfg.pad_rgb,
            merge_buffer_px=cfg.merge_buffer_px,
        )
        return [views.main, MAIN_CAPTION.format(colour), views.zoom, ZOOM_CAPTION], views

    def box_colour(self, question: str) -> Literal["red", "blue"]:
        """The outline colour: configured, or (auto) blue when the question mentions a "red rectangle"."""
        if self.config.box_color != "auto":
            return self.config.box_color
        return "blue" if "red rectangle" in question.lower() else "red"

    def node_crop(self, image: Image.Image, node: Node) -> Image.Image:
        """The node's patch: expanded about its centre to >= patch_size per side, times patch_scale, clipped."""
        x0, y0, x1, y1 = self.crop_box(node, image.size)
        return image.crop((x0, y0, x1, y1))

    def crop_box(self, node: Node, image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
        """Integer xyxy of the node's expanded patch in image pixels."""
        x, y, w, h = node.bbox
        cx, cy = x + w / 2, y + h / 2
        sw, sh = float(max(w, self.patch_size)), float(max(h, self.patch_size))
        if self.config.patch_scale:
            sw, sh = sw * self.config.patch_scale, sh * self.config.patch_scale
        iw, ih = image_wh
        x0, y0 = max(0, math.floor(cx - sw / 2)), max(0, math.floor(cy - sh / 2))
        x1, y1 = min(iw, math.ceil(cx + sw / 2)), min(ih, math.ceil(cy + sh / 2))
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    # ------------------------------------------------------------------ search

    def root(self, image_wh: tuple[int, int]) -> Node:
        """The root node over the whole image."""
        return Node((0, 0, image_wh[0], image_wh[1]), 0, "0", self.patch_size, self.config.split_num)

    def search_type1(
        self,
        image: Image.Image,
        cue: str,
        question: str,
        *,
        force_visit_bottom: bool = False,
        force_no_root: bool = False,
        colour: Literal["red", "blue"] = "red",
    ) -> SearchOutcome:
        """ZoomEye's ``zoom_eye_search_type1`` for one visual cue; returns the chosen node and the trace."""
        cfg = self.config
        root = self.root(image.size)
        max_depth = min(tree_depth(*image.size, self.patch_size, cfg.split_num), cfg.depth_limit)
        tau, pop_limit, decrements = cfg.answer_upper, cfg.pop_limit_per_depth * max_depth, list(cfg.decrements)
        queue: list[Node] = [root]
        popped: list[Node] = []
        answering: dict[int, float] = {}
        priority: dict[int, float] = {}
        candidates: list[Node] = []
        visited_bottom = False
        trace: list[TraceStep] = []

        while queue:
            node = queue.pop(0)
            popped.append(node)
            tau_at_pop = tau
            asked: float | None = None
            if force_no_root and node is root:
                answering[id(node)] = -1.0
            else:
                asked = answering[id(node)] = self._confidences(
                    image, [node], "answering", target=cue, question=question, colour=colour
                )[0]
            event: Event = "pop"
            if asked is not None and asked >= tau:
                candidates.append(node)
                done = not force_visit_bottom or visited_bottom
                if done:
                    trace.append(TraceStep(node.name, asked, tau_at_pop, "stop"))
                    break
            elif len(popped) >= pop_limit:  # budget exhausted: relax the threshold
                tau -= decrements[0]
                if len(decrements) > 1:
                    decrements.pop(0)
                pop_limit += cfg.num_interval
                above = [p for p in popped if answering[id(p)] >= tau]
                if above:
                    candidates = [max(above, key=lambda p: answering[id(p)])]  # ties: first popped
                event = "relax_accept" if candidates else "give_up" if tau < cfg.answer_lower else "relax_continue"
                trace.append(TraceStep(node.name, asked, tau_at_pop, event, tau))
                if event != "relax_continue":
                    break
            if event == "pop":
                trace.append(TraceStep(node.name, asked, tau_at_pop))
            if node.is_leaf or node.depth >= max_depth:
                visited_bottom = True
                if force_visit_bottom and candidates:
                    last = trace[-1]
                    trace[-1] = TraceStep(last.node, last.answering, last.tau, "bottom_stop", last.new_tau)
                    break
            else:
                queue.extend(node.children)
            self._rank(image, queue, priority, cue, max_depth, colour=colour)
        best = None
        for c in candidates:  # deepest candidate, ties: first
            if best is None or c.depth > best.depth:
                best = c
        return SearchOutcome(best, trace, len(popped), max_depth)

    def _rank(
        self,
        image: Image.Image,
        queue: list[Node],
        priority: dict[int, float],
        cue: str,
        max_depth: int,
        *,
        colour: Literal["red", "blue"] = "red",
    ) -> None:
        """Sort ``queue`` by priority, descending (stable); new nodes cost 2 passes each (existence + latent)."""
        new = [n for n in queue if id(n) not in priority]
        if new:
            exist = self._confidences(image, new, "existence", target=cue, colour=colour)
            latent = self._confidences(image, new, "latent", target=cue, colour=colour)
            for n, e, lat in zip(new, exist, latent, strict=True):
                w = priority_weight(n.depth, max_depth, self.config.bias)
                priority[id(n)] = w * e + (1 - w) * lat
        queue.sort(key=lambda n: -priority[id(n)])

    def search_type2(self, image: Image.Image, cue: str, *, colour: Literal["red", "blue"] = "red") -> list[Node]:
        """ "all X" cues: post-order to ``type2_depth``, keep nodes whose existence beats everything below them."""
        kept: list[Node] = []

        def visit(node: Node) -> float:
            below = -math.inf
            if node.depth < self.config.type2_depth:
                for child in node.children:
                    below = max(below, visit(child))
            e = self._confidences(image, [node], "existence", target=cue, colour=colour)[0]
            if e >= max(below, self.config.visual_cue_threshold):
                kept.append(node)
            return max(e, below)

        visit(self.root(image.size))
        return kept

    def root_filter(self, image: Image.Image, cues: Sequence[VisualCue]) -> bool:
        """Global+Local, several cues: True when some ordinary cue is answerable at the root (search skipped).

        One pass per ordinary cue: the answering confidence of the decomposed question ("What is the appearance of
        the {cue}?") on the root's small view (:func:`root_view`), compared with ``tau_upper``; "all X" cues are not
        asked.
        """
        ordinary = [c for c in cues if not c.all_instances]
        if not ordinary:
            return False
        cfg = self.config
        p = cfg.prompts
        view = root_view(image, main_px=self.patch_size, main_view=cfg.main_view, fill=cfg.pad_rgb)
        texts = [p.answering.format(question=p.decomposed.format(target=c.name), target=c.name) for c in ordinary]
        with self.adapter.counter.in_phase("search"):
            conf = confidence(self.adapter.yes_no_margins([view] * len(ordinary), texts))
        logger.debug("zoomeye root filter: %s", dict(zip([c.text for c in ordinary], conf, strict=True)))
        return any(c >= cfg.answer_upper for c in conf)

    def extract_cues(self, question: str) -> list[VisualCue]:
        """One text-only greedy generate (aux phase) and the parsed visual cues, from ``config.cues``:

        - ``"prompt"`` (official): ZoomEye's cue prompt, parsed by :func:`parse_cues`;
        - ``"focus_extraction"``: FOCUS's Stage-I prompt and :func:`~focus_tool.steps.targets.parse_targets` with
          ``config.targets`` (the same call and parsing as FOCUS, counted as aux as FOCUS's is); a type-2 target
          becomes the cue "all {phrase}" (already singular: no second plural strip).
        """
        cfg = self.config
        with self.adapter.counter.in_phase("aux"):
            if cfg.cues == "focus_extraction":
                prompt, max_new = extraction_prompt(question, cfg.targets), cfg.targets.max_new_tokens
            else:
                prompt, max_new = cfg.prompts.cue.format(question=question), cfg.cue_max_new_tokens
            reply = self.adapter.generate(None, prompt, max_new_tokens=max_new)
        if cfg.cues == "focus_extraction":
            targets = parse_targets(reply, question, cfg.targets)
            cues = [
                VisualCue(f"all {t.phrase}" if t.all_instances else t.phrase, t.phrase, t.all_instances)
                for t in targets
            ][: cfg.max_targets]
        else:
            cues = [VisualCue.from_text(c) for c in parse_cues(reply, cfg.max_targets)]
        logger.debug("zoomeye cues (%s): %r -> %s", cfg.cues, reply, [c.text for c in cues])
        if not cues:
            # peers.md documents no fallback; upstream get_zoom_eye_response then loops over no target and answers
            # on the full image (its "direct answering" path): kept, and said
            level = logging.WARNING if not self._warned_no_cue else logging.DEBUG
            self._warned_no_cue = True
            logger.log(
                level,
                "zoomeye: no visual cue parsed from the %s reply %r; no search, answering on the full image "
                "(logged once per method at warning level)",
                cfg.cues,
                reply,
            )
        return cues

    # ------------------------------------------------------------------ the engine

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
        cues: Sequence[str] | None = None,
    ) -> FocusResult:
        """Cue extraction (unless ``cues``, e.g. ``["red card", "all dogs"]``), the root filter (Global+Local), one
        search per cue, the answer."""
        self.adapter.counter.reset()
        t0 = time.perf_counter()
        cue_list = [VisualCue.from_text(c) for c in cues] if cues is not None else self.extract_cues(question)
        t1 = time.perf_counter()
        multi = len(cue_list) > 1
        local = self.input_mode == "local"
        colour = self.box_colour(question)
        searched = [] if not local and multi and self.root_filter(image, cue_list) else cue_list
        found: list[tuple[str, Node, float | None]] = []
        for cue in searched:
            if cue.all_instances:
                found.extend((cue.text, n, None) for n in self.search_type2(image, cue.name, colour=colour))
                continue
            q = self.config.prompts.decomposed.format(target=cue.name) if multi else question
            out = self.search_type1(
                image, cue.name, q, force_visit_bottom=multi, force_no_root=multi and local, colour=colour
            )
            if out.node is not None:
                last = [s.answering for s in out.trace if s.node == out.node.name and s.answering is not None]
                found.append((cue.text, out.node, last[-1] if last else None))
        t2 = time.perf_counter()
        answer, view_kind, answer_boxes = self._final_answer(
            image,
            [n for _, n, _ in found],
            question=question,
            options=options,
            scheme=scheme,
            suffix=suffix,
            colour=colour,
        )
        t3 = time.perf_counter()
        regions = [
            Region(
                id=f"r{i + 1}",
                box=n.xyxy,
                confidence=None if c is None else min(1.0, max(0.0, (c + 1) / 2)),
                target=cue,
                rank=1,
                anchor_score=0.0,
                selected=True,
            )
            for i, (cue, n, c) in enumerate(found)
        ]
        return FocusResult(
            method="zoomeye",
            model_id=self.adapter.model_id,
            image_wh=image.size,
            question=question,
            answer=answer,
            targets=[c.text for c in cue_list],
            target_types=["all" if c.all_instances else "single" for c in cue_list],
            regions=regions,
            answer_view=view_kind,
            answer_boxes=answer_boxes,
            forward_passes=ForwardPasses.from_counter(self.adapter.counter),
            prefill_tokens=self.adapter.counter.prefill_tokens,
            timings_s={"targets": round(t1 - t0, 4), "search": round(t2 - t1, 4), "answer": round(t3 - t2, 4)},
        )

    def _final_answer(
        self,
        image: Image.Image,
        nodes: Sequence[Node],
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme,
        suffix: str,
        colour: Literal["red", "blue"],
    ) -> tuple[str, Literal["full", "crop", "multi"], list[Box]]:
        """The answer on the found nodes (§1.7): (answer, answer_view, answer boxes in image px)."""
        max_new = self.config.answer_max_new_tokens
        if self.input_mode == "global_local" and nodes and all(n.depth > 0 for n in nodes):
            parts, views = self.zoom_parts(image, nodes, colour=colour)
            answer = answer_on_parts(
                self.adapter, parts, question=question, options=options, scheme=scheme, suffix=suffix,
                max_new_tokens=max_new,
            )  # fmt: skip
            return answer, "multi", views.boxes_xyxy
        union: Box | None = None
        if self.input_mode == "local" and nodes:  # the union of the expanded patches
            b = [self.crop_box(n, image.size) for n in nodes]
            union = (min(x[0] for x in b), min(x[1] for x in b), max(x[2] for x in b), max(x[3] for x in b))
        # Global+Local with nothing found (or the root): the full image alone, "global" prompt
        view = image.crop(union) if union else image
        answer = answer_on(
            self.adapter, [view], question=question, options=options, scheme=scheme, suffix=suffix,
            max_new_tokens=max_new,
        )  # fmt: skip
        return answer, ("crop" if union else "full"), ([union] if union else [])

"""ZoomEye (arXiv 2411.16044, github.com/om-ai-lab/ZoomEye @ 6762d79): confidence-ranked tree search over crops.

Faithful to the upstream code (om-ai-lab/ZoomEye; the file and function names below are upstream's), above all
``ZoomEye/zoom_eye.py::zoom_eye_search_type1``:

- **Tree** (``ZoomEye/tree.py``): a node is terminal when ``max(w, h) < patch_size`` (the vision encoder's input side);
  otherwise it splits into ``split_num`` equal sub-patches, the last row/column absorbing the remainder (2x2; a 1-column
  x 4-row stack when h / w >= 2, 4 columns x 1 row when h / w <= 0.5 [I: our reading of "1x4"]). Search depth
  ``D = min(tree depth, depth_limit)``.
- **Confidences** (``ZoomEye/zoom_model*.py``): one forward each,
  ``c = 2 * (softmax(l_Yes, l_No)[Yes] - 0.5) = tanh((l_Yes - l_No) / 2)``. Two input modes
  (``ZoomEyeConfig.input_mode``; by default from the adapter: ``answer_mode == "multi"``, i.e. the anyres /
  native-resolution OneVision and Qwen2.5-VL adapters, runs Global+Local, LLaVA-1.5 runs Local):

  - *Local* (``ZoomModelLocal``): the node's expanded patch alone, through :meth:`MLLMAdapter.yes_no_margins`.
  - *Global+Local* (``ZoomModelGlobalLocal`` / ``ZoomModelQwenVL``): the root is the full image alone (the adapter's
    own anyres / native resolution) with the "global" prompts; any other node is two images in one turn, through
    :meth:`MLLMAdapter.yes_no_margins_interleaved`: the main image (the image padded to a square, the node's
    expanded patch outlined, resized to ``patch_size`` square for OneVision or to long side ``patch_size`` with the
    aspect kept for Qwen2.5-VL) with "This is the main image, and the section enclosed by the red rectangle is the
    focus region.", then the zoomed-in view (the outlined patch cut from the padded square, outline included) with
    "This is the zoomed-in view of the focus region.", then the "zoomed-in view" prompt (answering: the Local one).
- **Priority** (``get_priority``, ``get_confidence_weight``): ``w(d) * c_exist + (1 - w(d)) * c_latent`` with
  ``w(d) = b + (1 - b) * (d / D)^2``, computed once per node (2 passes) when the node first sits in a queue that is
  sorted.
- **Loop** (``zoom_eye_search_type1``): pop the best node, answering confidence (1 pass), stop at ``>= tau``; after
  ``pop_limit`` pops relax ``tau`` by the next decrement, raise ``pop_limit`` by ``num_interval`` and accept the best
  popped node above the new ``tau``; give up below ``tau_lower``. Several targets: the decomposed question "What is the
  appearance of the {t}?", ``force_visit_bottom`` and, in Local mode only, ``force_no_root``.
- **Root filter** (``filter_visual_cues``, Global+Local only): with several cues, the answering confidence of each
  ordinary cue's decomposed question on the root's small view (the padded square, or the aspect-kept image, at
  ``patch_size``); if any reaches ``tau_upper`` no cue is searched and the answer uses the full image (k passes).
- **Type-2 cues** ("all X", ``zoom_eye_search_type2``): post-order traversal to depth 2, existence of every node (1 pass
  each), keep a node when its existence >= max(best existence below it, ``visual_cue_threshold``).
- **Final answer** (``zoom_model*.py``): Local: the union of the found nodes' expanded boxes, or the full image if none.
  Global+Local: the full image alone if nothing was found (or the root was), else the main image with every found
  patch outlined (overlapping patches merged, 50-px buffer) and the zoomed-in view of their union, with the same
  two captions before the question (letter: generated; logit: one pass per option).

Our choices and deviations from upstream ([I] marks our reading of upstream): when the relaxed threshold admits no
popped node, earlier candidates (from a ``force_visit_bottom`` stop) are kept; the cue-extraction call has no in-context
examples (ZoomEye's ``ic_examples/*.json`` are not vendored) and pronouns are dropped with a word list instead of spaCy;
at most ``max_targets`` cues are searched. Global+Local: the outline is ``max(1, S // 120)`` px wide on the S-px padded
square (upstream ``S // 120``, which draws nothing below 120 px); ``box_color="auto"`` draws blue when the question
mentions a "red rectangle" (as upstream ``get_zoom_eye_response`` intends) and the caption names the colour drawn
(upstream as released always draws and says red: its switch assigns a local variable); its confidences run one forward
per prompt (no batching across prompts); the Local mode's two-block canvas for far-apart boxes
(``union_blocks_independent``) is not reproduced. When no cue parses from the extraction reply, nothing is searched and
the answer uses the full image (upstream ``get_zoom_eye_response`` does the same: it loops over no cue); a warning is
logged.

Per-checkpoint adaptation [deviation, off by default]: a checkpoint's ``focus_preset.json`` may carry a ``"zoomeye"``
section (:func:`zoomeye_config_for`) that takes the visual cues from FOCUS's Stage-I prompt instead of ZoomEye's
(``ZoomEyeConfig.cues``) and replaces the wording of any prompt (:class:`ZoomEyePrompts`), for models that cannot
read the official prompts (the embedded card-world model's closed vocabulary). The search itself is unchanged.
"""

from focus_tool.baselines.zoomeye.config import (
    ZOOMEYE_PRESETS,
    ZOOMEYE_SECTION_KEYS,
    ZoomEyeConfig,
    apply_zoomeye_section,
    register_zoomeye_preset,
    zoomeye_config_for,
)
from focus_tool.baselines.zoomeye.method import ZoomEyeMethod
from focus_tool.baselines.zoomeye.prompts import (
    ANSWERING,
    BOX_RGB,
    CUE_PROMPT,
    CUE_SOURCES,
    DECOMPOSED,
    EXISTENCE,
    EXISTENCE_NODE,
    LATENT,
    LATENT_NODE,
    LATENT_ROOT,
    MAIN_CAPTION,
    PROMPT_FIELDS,
    ZOOM_CAPTION,
    ConfidenceKind,
    CueSource,
    InputMode,
    ZoomEyePrompts,
)
from focus_tool.baselines.zoomeye.search import Event, SearchOutcome, TraceStep
from focus_tool.baselines.zoomeye.tree import (
    Node,
    VisualCue,
    confidence,
    parse_cues,
    priority_weight,
    split_grid,
    tree_depth,
)
from focus_tool.baselines.zoomeye.views import Box, ZoomViews, merge_boxes, root_view, zoom_views

__all__ = [
    "ANSWERING",
    "BOX_RGB",
    "CUE_PROMPT",
    "CUE_SOURCES",
    "DECOMPOSED",
    "EXISTENCE",
    "EXISTENCE_NODE",
    "LATENT",
    "LATENT_NODE",
    "LATENT_ROOT",
    "MAIN_CAPTION",
    "PROMPT_FIELDS",
    "ZOOMEYE_PRESETS",
    "ZOOMEYE_SECTION_KEYS",
    "ZOOM_CAPTION",
    "Box",
    "ConfidenceKind",
    "CueSource",
    "Event",
    "InputMode",
    "Node",
    "SearchOutcome",
    "TraceStep",
    "VisualCue",
    "ZoomEyeConfig",
    "ZoomEyeMethod",
    "ZoomEyePrompts",
    "ZoomViews",
    "apply_zoomeye_section",
    "confidence",
    "merge_boxes",
    "parse_cues",
    "priority_weight",
    "register_zoomeye_preset",
    "root_view",
    "split_grid",
    "tree_depth",
    "zoom_views",
    "zoomeye_config_for",
]

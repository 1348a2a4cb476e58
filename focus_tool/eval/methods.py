"""The built-in methods behind the harness's ``run`` signature, and their registry factories.

Each factory is ``(adapter, options) -> Method``; :mod:`focus_tool.methods` names them and builds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, Method
from focus_tool.config import PIPELINES
from focus_tool.errors import FocusError
from focus_tool.methods import NoOptions
from focus_tool.result import FocusResult


@dataclass(frozen=True)
class FocusOptions:
    """FOCUS's options (``--method-option pipeline=paper``; ``--pipeline`` is the same).

    Attributes:
        pipeline: the checkpoint's preset as it is, the paper's pipeline or lean FOCUS
            (:data:`focus_tool.config.PIPELINES`, :func:`focus_tool.presets.pipeline_variant`).
    """

    pipeline: str = "preset"

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise FocusError(f"unknown pipeline {self.pipeline!r}; choose one of: {', '.join(PIPELINES)}")


@dataclass(frozen=True)
class ZoomEyeOptions:
    """ZoomEye's options (``--method-option depth=2``).

    Attributes:
        depth: the tree depth limit (None: the backbone's ZoomEye preset's).
    """

    depth: int | None = None


@dataclass(frozen=True)
class ViCropOptions:
    """ViCrop's options (``--method-option variant=grad-att --method-option high=true``).

    Attributes:
        variant: the attention map, relative attention or gradient-weighted attention (ViCrop, arXiv 2502.17422).
        high: the -high variant: one map per 1024-px block.
    """

    variant: Literal["rel-att", "grad-att"] = "rel-att"
    high: bool = False

    def __post_init__(self) -> None:
        if self.variant not in ("rel-att", "grad-att"):
            raise FocusError(f"unknown ViCrop variant {self.variant!r}; choose rel-att or grad-att")


class FocusMethod:
    """FOCUS (:class:`FocusPipeline`) behind the harness's ``run`` signature.

    The answer scheme is the pipeline's own (``AnswerConfig.scheme``): under ``"logit"`` the pipeline scores each
    option as the assistant reply to the bare question on its answer view (one crop / union / canvas, or the
    multi-image view of global-local models), so the answer passes are exactly the option passes (K per question)
    and no free-form reply is generated. Under ``"letter"`` the options are shown as (A) (B) ... with the
    benchmark's instruction (``suffix``) and one reply is generated.
    """

    name = "focus"

    def __init__(self, adapter: MLLMAdapter, pipeline: str = "preset") -> None:
        from focus_tool.pipeline import FocusPipeline
        from focus_tool.presets import config_for, pipeline_variant
        from focus_tool.world import read_world

        self.adapter = adapter
        self.config = pipeline_variant(config_for(adapter), pipeline)
        self.world = read_world(adapter.model_id)  # read once, not from disk for every item
        self._pipeline_cls = FocusPipeline

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
    ) -> FocusResult:
        """FOCUS zoom + answer under ``scheme``.

        Raises:
            ValueError: ``scheme="logit"`` without options.
        """
        if scheme == "logit" and not options:
            raise ValueError("the logit answer scheme needs options")
        cfg = self.config
        answer = dataclasses.replace(cfg.answer, scheme=scheme)
        if suffix:
            answer = dataclasses.replace(answer, answer_suffix=suffix)
        pipe = self._pipeline_cls(self.adapter, dataclasses.replace(cfg, answer=answer), world=self.world)
        return pipe.zoom(image, question=question, options=options)


def build_focus(adapter: MLLMAdapter, options: FocusOptions) -> Method:
    """FOCUS over ``adapter`` (``options.pipeline``: as the preset, the paper's or lean)."""
    return FocusMethod(adapter, options.pipeline)


def build_vanilla(adapter: MLLMAdapter, options: NoOptions) -> Method:
    """The vanilla answer on the whole image, under the checkpoint's preset."""
    from focus_tool.baselines.vanilla import VanillaMethod
    from focus_tool.presets import config_for

    return VanillaMethod(adapter, config_for(adapter))


def build_zoomeye(adapter: MLLMAdapter, options: ZoomEyeOptions) -> Method:
    """ZoomEye with its preset (``options.depth`` overrides the tree depth limit)."""
    from focus_tool.baselines.zoomeye import ZoomEyeMethod, zoomeye_config_for

    return ZoomEyeMethod(adapter, zoomeye_config_for(adapter, depth_limit=options.depth))


def build_vicrop(adapter: MLLMAdapter, options: ViCropOptions) -> Method:
    """ViCrop with ``options.variant`` and ``options.high``."""
    from focus_tool.baselines.vicrop import ViCropConfig, ViCropMethod

    return ViCropMethod(adapter, ViCropConfig(variant=options.variant, high=options.high))

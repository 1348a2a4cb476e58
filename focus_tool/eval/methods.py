"""The built-in methods behind the harness's ``run`` signature, and their registry factories.

Each factory is ``(adapter, options) -> Method``; :mod:`focus_tool.methods` names them and builds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, Method
from focus_tool.errors import FocusError
from focus_tool.methods import MethodOptions
from focus_tool.result import FocusResult


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

        self.adapter = adapter
        self.config = pipeline_variant(config_for(adapter), pipeline)
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
        pipe = self._pipeline_cls(self.adapter, dataclasses.replace(cfg, answer=answer))
        return pipe.zoom(image, question=question, options=options)


def build_focus(adapter: MLLMAdapter, options: MethodOptions) -> Method:
    """FOCUS over ``adapter`` (``options.pipeline``: as the preset, the paper's or lean)."""
    return FocusMethod(adapter, options.pipeline)


def build_vanilla(adapter: MLLMAdapter, options: MethodOptions) -> Method:
    """The vanilla answer on the whole image, under the checkpoint's preset."""
    from focus_tool.baselines.vanilla import VanillaMethod
    from focus_tool.presets import config_for

    return VanillaMethod(adapter, config_for(adapter))


def build_zoomeye(adapter: MLLMAdapter, options: MethodOptions) -> Method:
    """ZoomEye with its preset (``options.zoomeye_depth`` overrides the tree depth limit)."""
    from focus_tool.baselines.zoomeye import ZoomEyeMethod, zoomeye_config_for

    return ZoomEyeMethod(adapter, zoomeye_config_for(adapter, depth_limit=options.zoomeye_depth))


def build_vicrop(adapter: MLLMAdapter, options: MethodOptions) -> Method:
    """ViCrop with ``options.vicrop_variant`` and ``options.vicrop_high``.

    Raises:
        FocusError: the variant is neither rel-att nor grad-att.
    """
    from focus_tool.baselines.vicrop import ViCropConfig, ViCropMethod

    variant = options.vicrop_variant
    if variant not in ("rel-att", "grad-att"):
        raise FocusError(f"unknown ViCrop variant {variant!r}; choose rel-att or grad-att")
    return ViCropMethod(adapter, ViCropConfig(variant=variant, high=options.vicrop_high))  # type: ignore[arg-type]

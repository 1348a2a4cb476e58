"""A new method added through the documented extension point alone (docs/extending.md, "A method").

``centre-crop`` answers on the central half of the image: a naive "zoom" baseline. It uses only the public pieces:
the ``Method`` contract (:class:`focus_tool.baselines.common.Method`), the shared answering function
:func:`~focus_tool.baselines.common.answer_on`, the result builder :meth:`focus_tool.result.FocusResult.from_run`
and :func:`focus_tool.methods.register_method`.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on
from focus_tool.methods import MethodSpec, NoOptions, register_method
from focus_tool.result import FocusResult

NAME = "centre-crop"


class CentreCropMethod:
    """Crop the central half (each side halved), answer on it."""

    name = NAME

    def __init__(self, adapter: MLLMAdapter) -> None:
        self.adapter = adapter

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
    ) -> FocusResult:
        """Answer ``question`` on the centre crop; the result's one region is that crop."""
        self.adapter.counter.reset()
        w, h = image.size
        box = (w // 4, h // 4, w - w // 4, h - h // 4)
        answer = answer_on(
            self.adapter,
            [image.crop(box)],
            question=question,
            options=options,
            scheme=scheme,
            suffix=suffix,
            max_new_tokens=8,
        )
        return FocusResult.from_run(
            method=NAME,
            model_id=self.adapter.model_id,
            image_wh=image.size,
            counter=self.adapter.counter,
            question=question,
            answer=answer,
            answer_view="crop",
            answer_boxes=[box],
        )


def build(adapter: MLLMAdapter, options: NoOptions) -> CentreCropMethod:
    """The factory the registry calls (this method declares no options)."""
    return CentreCropMethod(adapter)


def register() -> None:
    """The plugin entry point."""
    register_method(MethodSpec(NAME, build, "answer on the central half of the image"), replace=True)

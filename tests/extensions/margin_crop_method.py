"""A method with an option of its own, added through the documented extension point alone (docs/extending.md).

``margin-crop`` answers on the image with a margin cut from every side, the margin a share of the side:
``focus eval --method margin-crop --method-option margin=0.25``. The option is a field of a frozen dataclass
named in the :class:`~focus_tool.methods.MethodSpec`; the factory receives it parsed and typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on
from focus_tool.errors import FocusError
from focus_tool.methods import MethodSpec, register_method
from focus_tool.result import FocusResult

NAME = "margin-crop"


@dataclass(frozen=True)
class MarginOptions:
    """The options of ``margin-crop``.

    Attributes:
        margin: the share of each side cut away on every edge (0 <= margin < 0.5).
    """

    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 0.5:
            raise FocusError(f"margin must be in [0, 0.5), got {self.margin}")


class MarginCropMethod:
    """Cut ``margin`` of each side from every edge, answer on the rest."""

    name = NAME

    def __init__(self, adapter: MLLMAdapter, options: MarginOptions) -> None:
        self.adapter = adapter
        self.options = options

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
    ) -> FocusResult:
        """Answer ``question`` on the inner crop; the result's one region is that crop."""
        self.adapter.counter.reset()
        w, h = image.size
        dx, dy = round(w * self.options.margin), round(h * self.options.margin)
        box = (dx, dy, w - dx, h - dy)
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


def build(adapter: MLLMAdapter, options: MarginOptions) -> MarginCropMethod:
    """The factory the registry calls, with this method's own options."""
    return MarginCropMethod(adapter, options)


def register() -> None:
    """The plugin entry point."""
    register_method(
        MethodSpec(NAME, build, "answer inside a margin cut from every side", options=MarginOptions), replace=True
    )

"""Vanilla baseline: answer on the whole image (no search). Letter scheme = :meth:`FocusPipeline.vanilla`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from PIL import Image

from focus_tool.adapters.base import MLLMAdapter
from focus_tool.baselines.common import AnswerScheme, answer_on
from focus_tool.config import FocusConfig
from focus_tool.pipeline import FocusPipeline
from focus_tool.result import FocusResult


class VanillaMethod:
    """The whole image, one answer call (letter) or one pass per option (logit)."""

    name = "vanilla"

    def __init__(self, adapter: MLLMAdapter, config: FocusConfig | None = None) -> None:
        self.adapter = adapter
        self.config = config or FocusConfig()

    def run(
        self,
        image: Image.Image,
        *,
        question: str,
        options: Sequence[str] | None,
        scheme: AnswerScheme = "letter",
        suffix: str = "",
    ) -> FocusResult:
        """Answer on the whole image."""
        if scheme == "letter":
            # the caller's scheme wins over the checkpoint preset's ``answer.scheme`` (the embedded preset says "logit")
            cfg = self.config
            answer_cfg = dataclasses.replace(cfg.answer, scheme="letter")
            if suffix:
                answer_cfg = dataclasses.replace(answer_cfg, answer_suffix=suffix)
            cfg = dataclasses.replace(cfg, answer=answer_cfg)
            return FocusPipeline(self.adapter, cfg).vanilla(image, question=question, options=options)
        self.adapter.counter.reset()
        t0 = time.perf_counter()
        answer = answer_on(
            self.adapter,
            [image],
            question=question,
            options=options,
            scheme=scheme,
            suffix=suffix,
            max_new_tokens=self.config.answer.max_new_tokens,
            shared_prefix=self.config.answer.shared_prefix,
        )
        return FocusResult.from_run(
            method="vanilla",
            model_id=self.adapter.model_id,
            image_wh=image.size,
            counter=self.adapter.counter,
            timings_s={"answer": time.perf_counter() - t0},
            question=question,
            answer=answer,
            answer_view="full",
        )

"""Shared setup of the agent-surface tests: a tiny random LLaVA pipeline, images, and a scripted engine."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from focus_tool.agent import ProgressFn
from focus_tool.pipeline import FocusPipeline
from focus_tool.result import FocusResult, ForwardPasses, Region
from tests.bad_inputs import write_png
from tests.tiny_models import save_tiny_llava

QUESTION = "What color is the card?"
TARGET = "red card"


def tiny_pipeline(folder: Path) -> FocusPipeline:
    """A FocusPipeline over a freshly saved tiny random LLaVA (CPU, ~0.1 s per call)."""
    from focus_tool.adapters.registry import load_adapter
    from focus_tool.presets import config_for

    model = save_tiny_llava(folder / "model")
    adapter = load_adapter(model)
    return FocusPipeline(adapter, config_for(adapter, model))


def image_dir(folder: Path) -> Path:
    """An allowed root holding ``scene.png`` (256 x 192)."""
    root = folder / "images"
    root.mkdir(parents=True, exist_ok=True)
    write_png(root / "scene.png", (256, 192))
    return root


class ScriptedEngine:
    """A deterministic engine: two regions at fixed fractions of whatever image it gets; counts calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def zoom(
        self,
        image: Image.Image,
        *,
        question: str | None = None,
        target: str | None = None,
        progress: ProgressFn | None = None,
    ) -> FocusResult:
        w, h = image.size
        self.calls.append((w, h))
        if progress is not None:
            for message, fraction in (("targets", 0.0), (f"search {target or 'thing'}", 0.5), ("done", 1.0)):
                progress(message, fraction)
        regions = [
            Region(
                id="r1",
                box=(w // 4, h // 4, w // 2, h // 2),
                confidence=0.9,
                target=target or "thing",
                rank=1,
                anchor_score=2.0,
                selected=True,
            ),
            Region(
                id="r2",
                box=(0, 0, w // 8 + 1, h // 8 + 1),
                confidence=0.2,
                target=target or "thing",
                rank=2,
                anchor_score=1.0,
            ),
        ]
        return FocusResult(
            model_id="scripted",
            image_wh=(w, h),
            question=question,
            answer="red" if question else None,
            targets=[target or "thing"],
            target_types=["single"],
            regions=regions,
            answer_view="crop" if question else "none",
            answer_boxes=[regions[0].box] if question else [],
            forward_passes=ForwardPasses(search=4, answer=1 if question else 0, extraction=0 if target else 1),
            prefill_tokens=100,
            timings_s={"answer": 0.001},
        )

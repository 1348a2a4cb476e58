"""The synthetic fine-grained world the embedded model is trained on and the synthetic benchmark is drawn from.

A scene is a large light image (768-2048 px) scattered with small coloured *cards* among neutral clutter. Each card
carries 1-4 *pips* (dice layout) of one colour. A card's colour is visible even in the model's downscaled global
view (a few pixels), so a model can name and locate it; its pips are 1-2 px there and blend into the card, so
their colour and number are only resolvable on a crop. That is the FOCUS phenomenon by construction:
the target is findable, its asked-about detail is not, until one zooms in.

Question kinds (V*Bench-like, plus counting):
- ``attribute``: "What is the color of the dots on the red card?" (4 pip colours)
- ``relative``:  "Is the red card on the left or right side of the blue card?" (two targets, left / right)
- ``count``:     "How many dots are on the red card?" (1-4)

Everything is generated from a ``numpy.random.Generator``: the same seed gives the same scenes. Training and the
test split draw from different seed streams (:data:`TRAIN_STREAM`, :data:`TEST_STREAM`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from focus_tool.prompts import existence_prompt

CARD_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
PIP_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "white": (250, 250, 250),
    "cyan": (40, 230, 230),
    "pink": (255, 150, 200),
}
COUNT_WORDS = ("1", "2", "3", "4")
SIDES = ("left", "right")
QuestionKind = Literal["attribute", "relative", "count"]
KINDS: tuple[QuestionKind, ...] = ("attribute", "relative", "count")
ANSWERS: dict[QuestionKind, tuple[str, ...]] = {"attribute": tuple(PIP_COLORS), "count": COUNT_WORDS, "relative": SIDES}
EXISTENCE_ANSWERS = ("Yes", "No")

TRAIN_STREAM = 0  # seed streams: np.random.default_rng([stream, seed]) keeps training and test scenes disjoint
TEST_STREAM = 1
DEMO_STREAM = 2
VALIDATION_STREAM = 3  # for choosing method thresholds (lean ranking); never the test split

# Pip centres in card-relative coordinates (0..1), dice layout.
_PIP_LAYOUT: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.5, 0.5),),
    2: ((0.28, 0.28), (0.72, 0.72)),
    3: ((0.25, 0.25), (0.5, 0.5), (0.75, 0.75)),
    4: ((0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72)),
}
_PIP_RADIUS = 0.11  # fraction of the card side


@dataclass(frozen=True)
class Card:
    """One card: an axis-aligned rounded square in image pixels."""

    xyxy: tuple[float, float, float, float]
    color: str
    pip_color: str
    n_pips: int

    @property
    def name(self) -> str:
        """The object phrase a question uses for this card, e.g. ``"red card"``."""
        return f"{self.color} card"

    @property
    def center(self) -> tuple[float, float]:
        """Centre (x, y) in image pixels."""
        x0, y0, x1, y1 = self.xyxy
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Clutter:
    """A neutral distractor shape (never a card colour)."""

    xyxy: tuple[float, float, float, float]
    fill: tuple[int, int, int]
    ellipse: bool


@dataclass(frozen=True)
class Scene:
    """A whole synthetic image: size, background and objects, all in image pixels."""

    size_wh: tuple[int, int]
    background: tuple[int, int, int]
    cards: tuple[Card, ...]
    clutter: tuple[Clutter, ...] = ()
    noise_seed: int = 0


@dataclass(frozen=True)
class Question:
    """One benchmark question about a scene. ``options[0]`` is the correct answer (V*Bench convention)."""

    kind: QuestionKind
    text: str
    options: tuple[str, ...]
    targets: tuple[str, ...]
    target_boxes_xyxy: tuple[tuple[float, float, float, float], ...]


@dataclass(frozen=True)
class BenchItem:
    """A scene with its question."""

    scene: Scene
    question: Question
    item_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# questions


def question_text(kind: QuestionKind, targets: tuple[str, ...]) -> str:
    """The question sentence for ``kind`` about ``targets`` (object phrases like ``"red card"``)."""
    if kind == "attribute":
        return f"What is the color of the dots on the {targets[0]}?"
    if kind == "count":
        return f"How many dots are on the {targets[0]}?"
    return f"Is the {targets[0]} on the left or right side of the {targets[1]}?"


def answer_options(kind: QuestionKind, correct: str, rng: np.random.Generator) -> tuple[str, ...]:
    """All options of ``kind`` with ``correct`` first and the others in a seeded order."""
    others = [o for o in ANSWERS[kind] if o != correct]
    rng.shuffle(others)
    return (correct, *others)


def existence_question(target: str) -> str:
    """Stage II / V prompt of the paper (:func:`focus_tool.prompts.existence_prompt`)."""
    return existence_prompt(target)


# ----------------------------------------------------------------------------------------------------------------
# scene sampling


def _place(
    rng: np.random.Generator, size_wh: tuple[int, int], side: float, taken: list[tuple[float, float, float, float]]
) -> tuple[float, float, float, float] | None:
    w, h = size_wh
    margin = side * 0.6
    for _ in range(60):
        x0 = rng.uniform(margin, w - side - margin)
        y0 = rng.uniform(margin, h - side - margin)
        box = (x0, y0, x0 + side, y0 + side)
        gap = side * 0.7
        if all(box[2] + gap < t[0] or t[2] + gap < box[0] or box[3] + gap < t[1] or t[3] + gap < box[1] for t in taken):
            return box
    return None


def _random_card(rng: np.random.Generator, box: tuple[float, float, float, float], color: str) -> Card:
    return Card(
        xyxy=box,
        color=color,
        pip_color=str(rng.choice(list(PIP_COLORS))),
        n_pips=int(rng.integers(1, 5)),
    )


def _clutter(rng: np.random.Generator, size_wh: tuple[int, int], side: float, n: int) -> tuple[Clutter, ...]:
    w, h = size_wh
    out = []
    for _ in range(n):
        s = side * rng.uniform(0.5, 1.3)
        x0, y0 = rng.uniform(0, w - s), rng.uniform(0, h - s)
        g = int(rng.integers(90, 200))
        tint = rng.integers(-15, 16, size=3)
        fill = tuple(int(np.clip(g + t, 0, 255)) for t in tint)
        out.append(Clutter((x0, y0, x0 + s * rng.uniform(0.6, 1.6), y0 + s), fill, bool(rng.random() < 0.5)))  # type: ignore[arg-type]
    return tuple(out)


def sample_scene(
    rng: np.random.Generator,
    *,
    size_wh: tuple[int, int],
    card_side: float,
    n_cards: int,
    target_colors: tuple[str, ...] = (),
    pair_near: bool = False,
    n_clutter: int = 0,
    distractor_colors: tuple[str, ...] | None = None,
) -> Scene:
    """Scatter ``n_cards`` cards of side ``card_side`` px; ``target_colors`` appear exactly once each.

    With ``pair_near`` the first two targets are placed side by side (horizontal offset 1.4-3 card sides,
    vertical offset under half a side), the layout of a relative-position question.
    """
    taken: list[tuple[float, float, float, float]] = []
    cards: list[Card] = []
    w, h = size_wh
    if pair_near and len(target_colors) >= 2:
        for _ in range(100):
            dx = card_side * rng.uniform(1.4, 3.0) * (1 if rng.random() < 0.5 else -1)
            dy = card_side * rng.uniform(-0.5, 0.5)
            x0 = rng.uniform(card_side, w - 2 * card_side)
            y0 = rng.uniform(card_side, h - 2 * card_side)
            a = (x0, y0, x0 + card_side, y0 + card_side)
            b = (x0 + dx, y0 + dy, x0 + dx + card_side, y0 + dy + card_side)
            if b[0] >= 0 and b[2] <= w and b[1] >= 0 and b[3] <= h:
                break
        taken += [a, b]
        cards += [_random_card(rng, a, target_colors[0]), _random_card(rng, b, target_colors[1])]
    for color in target_colors[len(cards) :]:
        box = _place(rng, size_wh, card_side, taken)
        if box is not None:
            taken.append(box)
            cards.append(_random_card(rng, box, color))
    others = [c for c in (distractor_colors or CARD_COLORS) if c not in target_colors] or list(CARD_COLORS)
    while len(cards) < n_cards:
        box = _place(rng, size_wh, card_side * rng.uniform(0.85, 1.15), taken)
        if box is None:
            break
        taken.append(box)
        cards.append(_random_card(rng, box, str(rng.choice(others))))
    g = int(rng.integers(200, 236))
    background = (g, g + int(rng.integers(-6, 7)), g + int(rng.integers(-6, 7)))
    return Scene(
        size_wh=size_wh,
        background=background,
        cards=tuple(cards),
        clutter=_clutter(rng, size_wh, card_side, n_clutter),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_bench_item(rng: np.random.Generator, kind: QuestionKind, item_id: str = "") -> BenchItem:
    """A benchmark-sized item: long side 768-2048 px, cards of 1/22-1/15 of the long side, 5-9 cards, clutter.

    In the model's 96-px global view a card is 4-6 px and its pips 1-1.5 px; in a crop of a quarter of the
    image side a card is 17-26 px and a pip 4-6 px.
    """
    long_side = int(rng.integers(768, 2049))
    short_side = int(long_side * rng.uniform(0.6, 1.0))
    size_wh = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    card_side = long_side / rng.uniform(15, 22)
    colors = list(CARD_COLORS)
    rng.shuffle(colors)
    n_targets = 2 if kind == "relative" else 1
    targets = tuple(colors[:n_targets])
    scene = sample_scene(
        rng,
        size_wh=size_wh,
        card_side=card_side,
        n_cards=int(rng.integers(5, 10)),
        target_colors=targets,
        pair_near=kind == "relative",
        n_clutter=int(rng.integers(4, 12)),
    )
    by_color = {c.color: c for c in scene.cards if c.color in targets}
    tcards = tuple(by_color[c] for c in targets)
    if kind == "attribute":
        correct = tcards[0].pip_color
    elif kind == "count":
        correct = str(tcards[0].n_pips)
    else:
        correct = "left" if tcards[0].center[0] < tcards[1].center[0] else "right"
    names = tuple(c.name for c in tcards)
    q = Question(
        kind=kind,
        text=question_text(kind, names),
        options=answer_options(kind, correct, rng),
        targets=names,
        target_boxes_xyxy=tuple(c.xyxy for c in tcards),
    )
    return BenchItem(scene=scene, question=q, item_id=item_id)


def benchmark_items(
    seed: int, n: int, *, mix: tuple[float, float, float] = (0.6, 0.25, 0.15), stream: int = TEST_STREAM
) -> list[BenchItem]:
    """The fixed-seed test split: ``n`` items from the test seed stream, kinds in proportion ``mix``.

    ``stream=VALIDATION_STREAM`` draws a disjoint validation split of the same distribution (thresholds are chosen
    there, never on the test split).
    """
    rng = np.random.default_rng([stream, seed])
    counts = np.floor(np.asarray(mix) * n).astype(int)
    counts[0] += n - counts.sum()
    kinds: list[QuestionKind] = [k for k, c in zip(KINDS, counts, strict=True) for _ in range(c)]
    prefix = "synth" if stream == TEST_STREAM else f"synth_s{stream}"
    return [sample_bench_item(rng, kind, item_id=f"{prefix}_{seed}_{i:04d}") for i, kind in enumerate(kinds)]


# ----------------------------------------------------------------------------------------------------------------
# rendering


def render(
    scene: Scene, window_xyxy: tuple[float, float, float, float] | None = None, max_side: int | None = None
) -> Image.Image:
    """Render ``window_xyxy`` (image pixels; default the whole scene) as an RGB image.

    The output has the window's size, scaled down so its long side is at most ``max_side`` (training renders
    small views directly instead of cropping a 2048-px image; geometry is identical).
    """
    x0, y0, x1, y1 = window_xyxy if window_xyxy is not None else (0.0, 0.0, *map(float, scene.size_wh))
    ww, wh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    scale = 1.0 if max_side is None else min(1.0, max_side / max(ww, wh))
    ss = 2  # supersampling for anti-aliased edges
    out_w, out_h = max(1, round(ww * scale)), max(1, round(wh * scale))
    s = scale * ss
    img = Image.new("RGB", (out_w * ss, out_h * ss), scene.background)
    draw = ImageDraw.Draw(img)

    def tr(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return ((b[0] - x0) * s, (b[1] - y0) * s, (b[2] - x0) * s, (b[3] - y0) * s)

    def visible(b: tuple[float, float, float, float]) -> bool:
        return b[2] > x0 and b[0] < x1 and b[3] > y0 and b[1] < y1

    for c in scene.clutter:
        if visible(c.xyxy):
            (draw.ellipse if c.ellipse else draw.rectangle)(tr(c.xyxy), fill=c.fill)
    for card in scene.cards:
        if not visible(card.xyxy):
            continue
        b = tr(card.xyxy)
        side = b[2] - b[0]
        draw.rounded_rectangle(b, radius=max(side * 0.15, 0.5), fill=CARD_COLORS[card.color])
        r = side * _PIP_RADIUS
        for px, py in _PIP_LAYOUT[card.n_pips]:
            cx, cy = b[0] + px * side, b[1] + py * side
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=PIP_COLORS[card.pip_color])
    img = img.resize((out_w, out_h), Image.Resampling.BOX)
    noise = np.random.default_rng(scene.noise_seed).normal(0, 4.0, size=(out_h, out_w, 1))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


# ----------------------------------------------------------------------------------------------------------------
# V*Bench-format files


def write_vstar(items: list[BenchItem], out_dir: Path, *, image_format: str = "png") -> list[Path]:
    """Write items in V*Bench's per-image layout: ``<id>.<ext>`` + ``<id>.json`` (first option correct).

    The JSON has the official fields (``target_object``, ``bbox`` as ``[x, y, w, h]``, ``question``, ``options``)
    plus ``category`` (the question kind) for per-kind scoring.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in items:
        q = item.question
        img_path = out_dir / f"{item.item_id}.{image_format}"
        render(item.scene).save(img_path)
        record = {
            "target_object": list(q.targets),
            "bbox": [
                [round(b[0], 1), round(b[1], 1), round(b[2] - b[0], 1), round(b[3] - b[1], 1)]
                for b in q.target_boxes_xyxy
            ],
            "question": q.text,
            "options": list(q.options),
            "category": q.kind,
        }
        (out_dir / f"{item.item_id}.json").write_text(json.dumps(record, indent=1))
        paths.append(img_path)
    return paths

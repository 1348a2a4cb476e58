"""Train the embedded model from scratch on the synthetic world (CPU, seeded, resumable).

``python -m focus_tool.embedded.train --out runs/embedded`` (or ``focus train-embedded``): 4500 steps, of which the
last 1000 are the second stage below.

What the model is taught (every example is an (image, prompt) -> answer pair in LLaVA-1.5's chat format):
- existence: "Is there a {colour} card in the image?" -> Yes / No, on global views and on crops;
- questions on views where the card is at least 8 px wide in the 96-px model input (as annotators only ask about
  visible things): pip colour, pip count (only where the pips are >= 3.5 px, and then half the time), left / right
  of two cards, as one-word answers (60 %, what V* logit matching scores) or lettered multiple choice (40 %);
- target naming: the default Stage-I extraction prompt (text only) -> "I need the info about red card."
- second stage (the last ``--stage2-steps``): 45 % binding examples (a view framing a side-by-side pair and a question
  about one of its two cards: pip colour / count, its half of the view, or left / right of the other), 25 % "Is the
  {colour} card on the left or right side?" on a view with that card in one half (a training-only question), 30 % the
  first stage's mix; learning rate restarted at 0.5 ``lr``. Without it the model read the view instead of the named
  card (same pip colour named for both cards of a pair 90 % of the time) and answered left / right at chance.

Losses: next-token cross-entropy on the answer tokens, plus an auxiliary loss on the VISION side only
(``--aux``): each 8-px patch's projector output is classified by card colour and by pip colour.
- ``hinge`` (default): margins instead of a softmax: every patch of a card has a projector output with cosine >=
  a margin (:data:`POS_MARGIN`) with the (detached) input embedding of its card colour (0.5), of the word "card"
  (0.4), when its pips are visible in the view of its pip colour (0.45) and, when they are countable, of its pip
  count (0.35), and, unless it sits on the view's midline, of "left" / "right" for the half of the view it lies in
  (0.35); |cosine| <= 0.1 with every other of these words; plus ``scale_match`` (projector output RMS =
  word-embedding RMS);
  satisfied margins give no gradient, so background stays unrelated to the words instead of anti-aligned (a
  softmax over cosines drove background to cosine -0.6 with the colour words, which made the Fig. 7 row sums
  negative and flipped the sign of the V-V map);
- ``tied-cls``: logits are scaled cosines between the projector output and the LM *input embeddings* of the colour
  words (so the image tokens and the colour words share a direction from layer 0 on);
- ``tied``: ``tied-cls`` plus an alignment term, 1 - cos(projector output, e(colour) + e("card")
  [+ e(pip colour)]) on card and pip patches, the analogue of LLaVA's stage-1 projector pre-training that maps
  image features into the LM's word-embedding space;
- ``untied``: a separate linear head (not saved with the model) classifies each patch by card and pip colour,
  plus ``scale_match``; nothing ties image tokens to word embeddings, so the LM must learn the word-image
  association from the questions alone;
- ``none``: no auxiliary loss.
The LM's cached keys and values (what FOCUS reads) are never the target of any loss.

The data stream is a pure function of (seed, step), so a run resumed from its checkpoint sees the same batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import ANSWER_SUFFIX, EmbeddedArch, build_model, build_processor
from focus_tool.ops.images import pad_to_square
from focus_tool.prompts import LETTERS, format_options
from focus_tool.steps.targets import DEFAULT_EXTRACT_PROMPT

logger = logging.getLogger(__name__)
IGNORE = -100
CARD_CLASSES = ("none", *syn.CARD_COLORS)  # index 0 = no card
PIP_CLASSES = ("none", *syn.PIP_COLORS)
COUNT_CLASSES = ("none", *syn.COUNT_WORDS)
SIDE_CLASSES = ("none", *syn.SIDES)
# the per-patch label tensors :func:`collate` adds to a batch (the auxiliary loss's targets, not model inputs)
PATCH_LABEL_KEYS = ("card_labels", "pip_labels", "count_labels", "side_labels")
PIP_MIN_PX = 2.5  # pip diameter (px of the 96-px input) from which a card's pip colour is labelled
# pip diameter from which a card's pip COUNT is labelled and asked: at 2.5 px the count was not resolvable (a probe of
# the projector output picked the right digit 41 %, chance 25 %, while the LM was asked to count from 1.8-px pips)
COUNT_MIN_PX = 3.5
# how far (card sides) a card's centre must be from the view's vertical midline to be labelled left / right
SIDE_MIN_OFFSET = 0.35
# under this share of a card in view, the card does not count as present: "Is there a {colour} card?" -> "No"
# (``force_exist`` examples only; between it and 0.9 a card is neither asked about nor a "No")
SLIVER_MAX = 0.25
# share of ``force_exist`` views placed so that one side cuts the anchor card to a sliver (asked about: "No")
STRADDLE_SHARE = 0.4
# hinge margins per word group: a patch must reach cosine >= margin with each of its labelled words. With 0.5 for all
# five groups the targets are jointly unreachable (five near-orthogonal unit words: sum of squared cosines <= 1), and
# the last-added group (count) was the one the vision side failed; the sum below is 0.86
POS_MARGIN = {"card": 0.5, "object": 0.4, "pip": 0.45, "count": 0.35, "side": 0.35}
_PIP_RADIUS = syn._PIP_RADIUS
OPEN_ANSWER_SHARE = 0.6  # one-word answers (what the logit scheme scores); the rest lettered multiple choice
EMBED_INIT_STD = 1.0  # word embeddings at RMS 1 per dim, the scale of a block's output at init (see train())


@dataclass
class Example:
    """One training example; ``image`` None for text-only (target naming)."""

    prompt: str  # the user text (the chat template is applied later)
    answer: str
    image: Any = None  # PIL image, already padded to a square
    card_labels: np.ndarray | None = None  # (G*G,) int class per patch, IGNORE where unsure
    pip_labels: np.ndarray | None = None  # (G*G,)
    count_labels: np.ndarray | None = None  # (G*G,)
    side_labels: np.ndarray | None = None  # (G*G,)


# ------------------------------------------------------------------------------------------------ data


def _extraction_example(rng: np.random.Generator) -> Example:
    colors = list(syn.CARD_COLORS)
    rng.shuffle(colors)
    kind = syn.KINDS[int(rng.integers(0, 3))]
    names = (f"{colors[0]} card", f"{colors[1]} card")
    q = syn.question_text(kind, names)
    if rng.random() < 0.5:
        pool = {"attribute": list(syn.PIP_COLORS), "count": list(syn.COUNT_WORDS), "relative": list(syn.SIDES)}[kind]
        rng.shuffle(pool)
        q = q + " " + " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(pool))
    if rng.random() < 0.15:
        q = syn.existence_question(names[0])
        kind = "attribute"
    targets = names if kind == "relative" else names[:1]
    answer = "I need the info about " + " and ".join(targets) + "."
    return Example(prompt=DEFAULT_EXTRACT_PROMPT.replace("{question}", q), answer=answer)


def _patch_labels(
    scene: syn.Scene, window: tuple[float, float, float, float], grid: int, view_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-patch card-colour, pip-colour, pip-count and side (left / right half) classes for the padded square
    view of ``window``."""
    wx0, wy0, wx1, wy1 = window
    side = max(wx1 - wx0, wy1 - wy0)
    padx, pady = (side - (wx1 - wx0)) / 2, (side - (wy1 - wy0)) / 2
    cell = side / grid
    card = np.zeros((grid, grid), dtype=np.int64)
    pip = np.zeros((grid, grid), dtype=np.int64)
    count = np.zeros((grid, grid), dtype=np.int64)
    side_l = np.zeros((grid, grid), dtype=np.int64)
    mid_x = (wx0 + wx1) / 2

    def paint(labels: np.ndarray, frac: np.ndarray, label: int) -> None:
        labels[frac >= 0.5] = label  # patches mostly on the card
        labels[(frac > 0.05) & (frac < 0.5) & (labels == 0)] = IGNORE  # partly on it: unsure

    def cells_overlap(b: tuple[float, float, float, float]) -> np.ndarray:
        x0, y0 = b[0] - wx0 + padx, b[1] - wy0 + pady
        x1, y1 = b[2] - wx0 + padx, b[3] - wy0 + pady
        edges = np.arange(grid + 1) * cell
        ox = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)  # (G,)
        oy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)
        area = min(cell * cell, max((x1 - x0) * (y1 - y0), 1e-6))
        return np.outer(oy, ox) / area  # (G, G) overlap fraction of the smaller of cell and box

    for c in scene.cards:
        frac = cells_overlap(c.xyxy)
        paint(card, frac, CARD_CLASSES.index(c.color))
        # the card's pip colour on EVERY patch of the card (an object-level attribute, as the card colour is), when
        # its pips are big enough to see in this view; unsure (IGNORE) when they are not. Labelling only the patches
        # under a pip left the pip colour weakly encoded (image-level accuracy 46-71 % on 24-38 px cards) and the
        # LM never learned to read it: the card's patches the question's colour word finds did not carry it.
        pip_px = 2 * _PIP_RADIUS * (c.xyxy[2] - c.xyxy[0]) / side * view_px
        label = PIP_CLASSES.index(c.pip_color) if pip_px >= PIP_MIN_PX else IGNORE
        paint(pip, frac, label)
        # the pip count likewise (an object-level attribute on every patch of the card, same visibility rule): with
        # questions alone the 2000-step model counted at chance even on the oracle crop (26.7 %, 45 test questions)
        label = COUNT_CLASSES.index(str(c.n_pips)) if pip_px >= COUNT_MIN_PX else IGNORE
        paint(count, frac, label)
        # which half of the view the card lies in, on every patch of the card: on a view that frames two cards (the
        # oracle crop, FOCUS's union region) this is the answer to "is A on the left or right side of B?" for A, so
        # the LM can answer by reading it off the first-named card's tokens as it reads the pip colour. Without it
        # the model answered left / right at chance even on the oracle crop (49.3 %). Unsure near the midline.
        off = (c.center[0] - mid_x) / (c.xyxy[2] - c.xyxy[0])
        label = IGNORE if abs(off) < SIDE_MIN_OFFSET else SIDE_CLASSES.index("left" if off < 0 else "right")
        paint(side_l, frac, label)
    return card.reshape(-1), pip.reshape(-1), count.reshape(-1), side_l.reshape(-1)


def _visible(card: syn.Card | tuple[float, float, float, float], window: tuple[float, float, float, float]) -> float:
    """Share of ``card``'s (or of a box's) area inside ``window``."""
    x0, y0, x1, y1 = card.xyxy if isinstance(card, syn.Card) else card
    ix = max(0.0, min(x1, window[2]) - max(x0, window[0]))
    iy = max(0.0, min(y1, window[3]) - max(y0, window[1]))
    return ix * iy / ((x1 - x0) * (y1 - y0))


def _qa(rng: np.random.Generator, kind: syn.QuestionKind, cards: list[syn.Card]) -> tuple[str, str]:
    names = tuple(c.name for c in cards)
    q = syn.question_text(kind, names)
    if kind == "attribute":
        correct = cards[0].pip_color
    elif kind == "count":
        correct = str(cards[0].n_pips)
    else:
        correct = "left" if cards[0].center[0] < cards[1].center[0] else "right"
    if rng.random() < OPEN_ANSWER_SHARE:
        return q, correct
    opts = list(syn.answer_options(kind, correct, rng))
    rng.shuffle(opts)
    return format_options(q, opts, ANSWER_SUFFIX), LETTERS[opts.index(correct)]


def _side_qa(rng: np.random.Generator, card: syn.Card, mid_x: float) -> tuple[str, str]:
    """A training-only question: which half of the view ``card`` lies in (the first hop of a left / right question,
    which the benchmark never asks)."""
    q = f"Is the {card.name} on the left or right side?"
    correct = "left" if card.center[0] < mid_x else "right"
    if rng.random() < OPEN_ANSWER_SHARE:
        return q, correct
    opts = list(syn.SIDES)
    rng.shuffle(opts)
    return format_options(q, opts, ANSWER_SUFFIX), LETTERS[opts.index(correct)]


def _clutter_leanings(scene: syn.Scene, window: tuple[float, float, float, float]) -> list[str]:
    """The card colour each clutter shape mostly inside ``window`` is tinted toward (grey +- 15 per channel)."""
    out = []
    refs = {name: np.asarray(rgb, dtype=np.float64) - np.mean(rgb) for name, rgb in syn.CARD_COLORS.items()}
    for k in scene.clutter:
        if _visible(k.xyxy, window) < 0.5:
            continue
        tint = np.asarray(k.fill, dtype=np.float64) - np.mean(k.fill)
        if np.linalg.norm(tint) < 4:  # grey: leans to nothing
            continue
        cos = {n: float(tint @ r / (np.linalg.norm(tint) * np.linalg.norm(r))) for n, r in refs.items()}
        out.append(max(cos, key=lambda n: cos[n]))
    return out


def sample_example(
    rng: np.random.Generator,
    *,
    warm: bool,
    arch: EmbeddedArch,
    force_pair: bool = False,
    force_side: bool = False,
    force_exist: bool = False,
) -> Example:
    """One training example. ``warm`` = the first curriculum stage (few, larger cards); ``force_pair``: a binding
    example of the second stage, a view that frames a side-by-side pair and a question about one card of the pair
    (pip colour, pip count, its half of the view, or left / right of the other); ``force_side``: a view with a card
    in its left or right half and the question which half (reading the side without having to pick the card);
    ``force_exist``: an existence question on a view placed anywhere around a card, half of the time a hard "No" (a
    colour seen only as a sliver of a card, or one a clutter shape is tinted toward)."""
    if not (force_pair or force_side or force_exist) and rng.random() < 0.12:
        return _extraction_example(rng)
    grid = arch.image_size // arch.patch_size
    long_side = int(rng.integers(768, 2049))
    short = int(long_side * rng.uniform(0.6, 1.0))
    size_wh = (long_side, short) if rng.random() < 0.6 else (short, long_side)
    card_side = long_side / rng.uniform(10, 24)
    colors = list(syn.CARD_COLORS)
    rng.shuffle(colors)
    palette = tuple(colors[: int(rng.integers(1, 6))])
    n_cards = int(rng.integers(1, 4)) if warm else int(rng.integers(2, 10))
    # a third of the scenes hold a side-by-side pair of uniquely coloured cards (the layout of the benchmark's
    # relative questions), most of their crops frame the pair: with crops around single cards only, a view held two
    # askable cards in ~4 % of the examples and the 2000-step model answered left / right at chance (54.7 %)
    pair = force_pair or (not (force_side or force_exist) and rng.random() < 1 / 3)
    scene = syn.sample_scene(
        rng,
        size_wh=size_wh,
        card_side=card_side,
        n_cards=n_cards,
        target_colors=tuple(colors[-2:]) if pair else (),
        distractor_colors=palette,
        n_clutter=int(rng.integers(0, 12)),
        pair_near=pair,
    )
    if not scene.cards:
        return _extraction_example(rng)
    w, h = size_wh
    anchor = None
    straddle = False
    if not (force_pair or force_side or force_exist) and rng.random() < 0.3:
        window = (0.0, 0.0, float(w), float(h))
    else:
        anchor = scene.cards[int(rng.integers(0, len(scene.cards)))]
        # log-uniform view size: ~60 % of the crops show the card at >= 16 px, where its pips can be counted
        side = card_side * (rng.uniform(2.0, 5.0) if warm else float(np.exp(rng.uniform(np.log(2.0), np.log(10.0)))))
        cx, cy = anchor.center
        slack = max(side / 2 - card_side * 0.6, 0.0)
        # frame the pair (70 %; always for a forced left / right example)
        if pair and len(scene.cards) >= 2 and (force_pair or rng.random() < 0.7):
            a, b = scene.cards[0].xyxy, scene.cards[1].xyxy
            ux0, uy0, ux1, uy1 = min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
            # up to 4.5 card sides of margin: the benchmark's oracle crop (pair union grown 3x) leaves 2.4-4
            side = max(ux1 - ux0, uy1 - uy0) + 2 * card_side * rng.uniform(0.3, 4.5)
            cx, cy = (ux0 + ux1) / 2, (uy0 + uy1) / 2
            slack = card_side * 0.3
        if force_side:  # the anchor card off the midline, in a random half of the view, whole
            off = min(max(rng.uniform(0.12, 0.38) * side, 0.35 * card_side), max(slack, 0.35 * card_side))
            cx, cy = cx - off * (1 if rng.random() < 0.5 else -1), cy + rng.uniform(-slack, slack)
        elif force_exist and rng.random() < STRADDLE_SHARE:
            # the card cut by one side of the view, under SLIVER_MAX of its width inside: placing it anywhere gave
            # too few slivers, and 1000 steps with them left P(Yes) > 0.5 on 78 % of crops holding 10 % of a card
            straddle = True
            share = rng.uniform(0.02, SLIVER_MAX)
            ax0, ay0, ax1, ay1 = anchor.xyxy
            cx, cy = cx + rng.uniform(-slack, slack), cy + rng.uniform(-slack, slack)
            edge = int(rng.integers(0, 4))  # which side of the view cuts it: left, right, top, bottom
            if edge == 0:
                cx = ax1 - share * (ax1 - ax0) + side / 2
            elif edge == 1:
                cx = ax0 + share * (ax1 - ax0) - side / 2
            elif edge == 2:
                cy = ay1 - share * (ay1 - ay0) + side / 2
            else:
                cy = ay0 + share * (ay1 - ay0) - side / 2
        elif force_exist:  # the card anywhere from the centre to just outside the border
            cx, cy = cx + rng.uniform(-side / 2, side / 2), cy + rng.uniform(-side / 2, side / 2)
        elif not force_pair and rng.random() < 0.15:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)  # anywhere: negatives and partial cards
        else:
            cx, cy = cx + rng.uniform(-slack, slack), cy + rng.uniform(-slack, slack)
        window = (
            max(0.0, cx - side / 2),
            max(0.0, cy - side / 2),
            min(float(w), cx + side / 2),
            min(float(h), cy + side / 2),
        )
        if window[2] - window[0] < 8 or window[3] - window[1] < 8:
            window = (0.0, 0.0, float(w), float(h))
    view_side = max(window[2] - window[0], window[3] - window[1])
    image = pad_to_square(syn.render(scene, window, max_side=4 * arch.image_size))
    card_l, pip_l, count_l, side_l = _patch_labels(scene, window, grid, arch.image_size)

    def px(c: syn.Card) -> float:
        return (c.xyxy[2] - c.xyxy[0]) / view_side * arch.image_size

    vis = [c for c in scene.cards if _visible(c, window) >= 0.9]
    partial = {c.color for c in scene.cards if 0.0 < _visible(c, window) < 0.9}
    counts: dict[str, int] = {}
    for c in vis:
        counts[c.color] = counts.get(c.color, 0) + 1
    unique = [c for c in vis if counts[c.color] == 1 and c.color not in partial and px(c) >= 8]
    prompt = answer = ""
    framed = pair and len(scene.cards) >= 2 and scene.cards[0] in unique and scene.cards[1] in unique
    mid_x = (window[0] + window[2]) / 2
    if force_side and anchor in unique and abs(anchor.center[0] - mid_x) >= SIDE_MIN_OFFSET * card_side:
        # the side read off one card: left / right was only ever asked on views of a pair, where reading the
        # side without picking the named card gives nothing; the stage-1 model answered this question at chance
        # (61.7 %) on views holding that card alone, whose projector output gave its side on 60 / 60
        prompt, answer = _side_qa(rng, anchor, mid_x)
    elif not force_exist and unique and (force_pair or rng.random() < 0.8):
        # otherwise one third each: with half attribute, a quarter each count / relative (and relative falling back
        # to attribute when the view has no second card) the 2000-step model answered count and left / right at
        # chance. Countable cards are asked to be counted half the time: with count asked only where pips are
        # >= 3.5 px and the kinds in thirds, 3 % of the examples were count questions
        chosen = list(unique)
        rng.shuffle(chosen)
        countable = 2 * _PIP_RADIUS * px(chosen[0]) >= COUNT_MIN_PX
        kind: syn.QuestionKind
        binding = force_pair and framed
        if binding:
            # Which card a question is about matters only when the view holds two: the stage-1 model answered the
            # pip colour of either card of a framed pair with the same word 90 % of the time (accuracy 45 %), i.e.
            # it reads the view, not the named card, and left / right (which needs the named card) stayed at chance
            chosen = list(scene.cards[:2])
            rng.shuffle(chosen)
            countable = 2 * _PIP_RADIUS * px(chosen[0]) >= COUNT_MIN_PX
            r = rng.random()
            if r < 0.25:
                prompt, answer = _side_qa(rng, chosen[0], mid_x)
            kind = "relative" if r < 0.5 else "count" if countable and r < 0.65 else "attribute"
        elif framed and (force_pair or rng.random() < 0.8):
            kind = "relative"
            chosen = list(scene.cards[:2])
            rng.shuffle(chosen)
        elif countable and rng.random() < 0.5:
            kind = "count"
        else:
            kind = syn.KINDS[int(rng.integers(0, 3))]
        if kind == "relative":
            ok = len(chosen) >= 2 and abs(chosen[0].center[0] - chosen[1].center[0]) >= 0.5 * card_side
            kind = kind if ok else "attribute"
        if kind == "count" and not countable:
            kind = "attribute"  # only ask to count pips that can be counted in this view
        if not prompt:
            prompt, answer = _qa(rng, kind, chosen[:2] if kind == "relative" else chosen[:1])
    if not prompt:
        present = {c.color for c in vis if px(c) >= 2.0} - partial
        touching = {c.color for c in scene.cards if _visible(c, window) > 0}
        absent = [c for c in syn.CARD_COLORS if c not in touching]
        hard: list[str] = []
        if force_exist:
            # "No" where the first stage said yes (P(Yes) 0.96-0.999, the ranking losses of the model card): a colour
            # seen only as a sliver (under SLIVER_MAX of the card in view), or one a clutter shape leans to
            mostly = {c.color for c in scene.cards if _visible(c, window) >= SLIVER_MAX}
            hard = sorted({c.color for c in scene.cards if 0 < _visible(c, window) < SLIVER_MAX} - mostly)
            hard += sorted({k for k in _clutter_leanings(scene, window) if k not in touching})
        if straddle and anchor is not None and anchor.color in hard:
            color, answer = anchor.color, "No"
        elif force_exist and present and rng.random() < 0.9:  # keep Yes / No near balanced (71 % "No" without)
            color, answer = sorted(present)[int(rng.integers(0, len(present)))], "Yes"
        elif hard and rng.random() < 0.5:
            color, answer = hard[int(rng.integers(0, len(hard)))], "No"
        elif present and (not absent or rng.random() < 0.5):
            color, answer = sorted(present)[int(rng.integers(0, len(present)))], "Yes"
        elif absent:
            color, answer = absent[int(rng.integers(0, len(absent)))], "No"
        else:
            return _extraction_example(rng)
        prompt = syn.existence_question(f"{color} card")
    return Example(
        prompt=prompt,
        answer=answer,
        image=image,
        card_labels=card_l,
        pip_labels=pip_l,
        count_labels=count_l,
        side_labels=side_l,
    )


# ------------------------------------------------------------------------------------------------ batching


def collate(examples: list[Example], processor: Any) -> dict[str, Any]:
    """Tokenise with the chat template, expand image tokens, mask the prompt out of the labels."""
    import torch

    tok = processor.tokenizer
    seqs, labels, images, card_l, pip_l, count_l, side_l = [], [], [], [], [], [], []
    for ex in examples:
        content: list[dict[str, str]] = [{"type": "image"}] if ex.image is not None else []
        content.append({"type": "text", "text": ex.prompt})
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        enc = processor(text=text, images=[ex.image] if ex.image is not None else None)
        ids = list(enc["input_ids"][0])
        ans = tok(ex.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(ids + ans)
        labels.append([IGNORE] * len(ids) + ans)
        if ex.image is not None:
            images.append(torch.as_tensor(np.asarray(enc["pixel_values"][0])))
            card_l.append(torch.as_tensor(ex.card_labels))
            pip_l.append(torch.as_tensor(ex.pip_labels))
            count_l.append(torch.as_tensor(ex.count_labels))
            side_l.append(torch.as_tensor(ex.side_labels))
    n = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    input_ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    lab = torch.full((len(seqs), n), IGNORE, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (s, l_) in enumerate(zip(seqs, labels, strict=True)):
        input_ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(s)] = torch.tensor(l_)
        att[i, : len(s)] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": att, "labels": lab}
    if images:
        batch["pixel_values"] = torch.stack(images)
        batch["card_labels"] = torch.stack(card_l)
        batch["pip_labels"] = torch.stack(pip_l)
        batch["count_labels"] = torch.stack(count_l)
        batch["side_labels"] = torch.stack(side_l)
    return batch


# ------------------------------------------------------------------------------------------------ training


def hinge_alignment(proj: Any, labels: Any, words: Any, pos: float = 0.5, neg: float = 0.1) -> Any:
    """Patch-word alignment with margins and no push past them.

    A patch labelled k should have cosine >= ``pos`` with word k; every other (patch, word) pair |cosine| <= ``neg``.
    Once a margin holds its gradient is zero, so background patches end up *unrelated* to the words (cosine near
    0), not anti-aligned as a softmax over cosines drives them.

    Args:
        proj: (n, P, width) projector outputs.
        labels: (n, P) class per patch, 0 = none, k >= 1 = words[k-1], IGNORE = unsure.
        words: (K, width) word input embeddings.
    """
    import torch.nn.functional as F

    # the words are the fixed reference (detached): only the vision side moves. With trainable targets the four pip
    # words drifted to a shared direction (cosine ~0.5 of a card patch with every pip word, pip colour at chance)
    cos = F.normalize(proj, dim=-1) @ F.normalize(words.detach(), dim=-1).T  # (n, P, K)
    valid = (labels != IGNORE)[..., None].expand_as(cos)  # (n, P, K)
    onehot = F.one_hot(labels.clamp_min(0), words.shape[0] + 1)[..., 1:].bool()  # (n, P, K)
    is_pos, is_neg = onehot & valid, ~onehot & valid
    pos_loss = F.relu(pos - cos)[is_pos]  # labelled (patch, word) pairs: cos >= pos
    neg_loss = F.relu(cos.abs() - neg)[is_neg]  # all other pairs: |cos| <= neg
    # positives and negatives are averaged separately: cards cover a few % of the patches, and a pooled mean let a
    # large component shared by every patch (orthogonal to all words) satisfy the negatives and starve the positives
    zero = cos.new_zeros(())
    return (pos_loss.mean() if pos_loss.numel() else zero) + (neg_loss.mean() if neg_loss.numel() else zero)


def scale_match(proj: Any, words: Any) -> Any:
    """(log of a patch's projector-output RMS over the word embeddings' RMS)^2, averaged over patches.

    Keeps image tokens on the scale of word tokens in the LM's residual stream (vision side: the word embeddings are
    the fixed reference, detached).
    """
    import torch

    ms_proj = proj.pow(2).mean(-1).clamp_min(1e-8)  # (n, P) mean square per patch
    ms_word = words.detach().pow(2).mean()
    return (0.5 * (torch.log(ms_proj) - torch.log(ms_word))).pow(2).mean()


def check_stages(
    steps: int, stage2_steps: int, forced_share: float, stage3_steps: int = 0, stage3_exist: float = 0.0
) -> None:
    """Refuse later stages that are not shorter than the run, or shares outside [0, 1] (ValueError)."""
    if stage2_steps < 0 or stage3_steps < 0 or stage2_steps + stage3_steps >= steps:
        raise ValueError(
            f"stage2_steps and stage3_steps must be at least 0 and together below steps ({steps}); "
            f"got {stage2_steps} and {stage3_steps}"
        )
    if forced_share > 1:
        raise ValueError("the stage-2 pair + side + exist shares must sum to at most 1")
    if not 0 <= stage3_exist <= 1:
        raise ValueError(f"stage3_exist must be in [0, 1]; got {stage3_exist}")


def train(
    out: Path,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    aux: str = "hinge",
    aux_weight: float = 0.5,
    threads: int = 2,
    warm_frac: float = 0.1,
    ckpt_every: int = 250,
    arch: EmbeddedArch | None = None,
    progress: bool = True,
    stage2_steps: int = 1000,
    stage2_pair: float = 0.45,
    stage2_side: float = 0.25,
    stage2_exist: float = 0.0,
    stage2_lr: float = 0.5,
    stage3_steps: int = 0,
    stage3_exist: float = 0.25,
    stage3_lr: float = 0.2,
) -> Path:
    """Train (or resume) and write the final checkpoint in the hub layout to ``out / "model"``.

    The last ``stage2_steps`` of ``steps`` are a second stage: a share ``stage2_pair`` of each batch are binding
    examples (questions about one card of a framed pair, see :func:`sample_example`), a share ``stage2_side``
    single-card side questions, a share ``stage2_exist`` existence questions with hard negatives, and the learning
    rate restarts at ``stage2_lr`` times ``lr`` with its own cosine. The first stage (its schedule, curriculum and
    data) depends only on ``steps - stage2_steps``, so a run of N steps resumed with ``--steps N+M --stage2-steps M``
    is the same as a fresh run of that command.

    ``stage3_steps`` (0: none) more steps follow the second stage (``steps`` counts them too): a share ``stage3_exist``
    of each batch are existence questions with hard negatives, the rest drawn as in the second stage, the learning
    rate restarted at ``stage3_lr`` times ``lr``. The stages before it are unchanged by it, so a finished run of N
    steps resumed with ``--steps N+M --stage3-steps M`` (and the same stage-2 settings) is a fresh run of that command.
    """
    check_stages(steps, stage2_steps, stage2_pair + stage2_side + stage2_exist, stage3_steps, stage3_exist)
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    arch = arch or EmbeddedArch()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor(arch)
    tok = processor.tokenizer
    model = build_model(
        len(tok), tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, arch
    )
    # Scale: with HF's init the word embeddings have RMS 1/sqrt(width) per dim (norm ~1) while every block writes
    # outputs of norm ~sqrt(width) into the residual stream, and the projector output grew to norm ~280 in an
    # earlier run: the question's words were swamped (text hidden norm 1 -> 77 after layer 0) and P(Yes) ignored the
    # colour asked. Embeddings start at RMS 1 per dim; the ``scale`` term below keeps the projector output there too.
    torch.nn.init.normal_(model.get_input_embeddings().weight, std=EMBED_INIT_STD)
    width = arch.text_width
    card_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(CARD_CLASSES[1:])))
    pip_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(PIP_CLASSES[1:])))
    count_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(COUNT_CLASSES[1:])))
    side_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(SIDE_CLASSES[1:])))
    card_id = int(tok.convert_tokens_to_ids("card"))
    aux_mod = torch.nn.ParameterDict(
        {
            "none_card": torch.nn.Parameter(torch.randn(width) * 0.02),
            "none_pip": torch.nn.Parameter(torch.randn(width) * 0.02),
            "scale": torch.nn.Parameter(torch.tensor(10.0)),
        }
    )
    head = torch.nn.Linear(width, len(CARD_CLASSES) + len(PIP_CLASSES))
    params = list(model.parameters()) + list(aux_mod.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    main_steps = steps - stage2_steps - stage3_steps
    stage3_start = steps - stage3_steps
    warmup = max(1, int(0.04 * main_steps))

    def cosine(t: float, peak: float) -> float:  # from peak * lr at t = 0 down to 0.05 * lr at t = 1
        return lr * (0.05 + (peak - 0.05) * 0.5 * (1 + math.cos(math.pi * t)))

    def lr_at(step: int) -> float:
        if step >= stage3_start:  # stage 3: restart at stage3_lr * lr
            return cosine((step - stage3_start) / max(1, stage3_steps), stage3_lr)
        if step >= main_steps:  # stage 2: restart at stage2_lr * lr
            return cosine((step - main_steps) / max(1, stage2_steps), stage2_lr)
        if step < warmup:
            return lr * (step + 1) / warmup
        return cosine((step - warmup) / max(1, main_steps - warmup), 1.0)

    captured: dict[str, torch.Tensor] = {}
    model.model.multi_modal_projector.register_forward_hook(lambda _m, _i, o: captured.__setitem__("proj", o))
    ckpt = out / "ckpt.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        aux_mod.load_state_dict(state["aux"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        logger.info("resumed from step %d", start)
    log = (out / "train_log.jsonl").open("a")
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="train")
    t0 = time.time()
    for step in bar:
        rng = np.random.default_rng([syn.TRAIN_STREAM, seed, step])
        warm = step < warm_frac * main_steps
        stage2, stage3 = step >= main_steps, step >= stage3_start
        examples = []
        for _ in range(batch_size):
            r = rng.random() if stage2 else 1.0
            if stage3:  # a share stage3_exist of existence questions, the rest drawn as in stage 2
                r = -1.0 if r < stage3_exist else (r - stage3_exist) / (1 - stage3_exist)
            force_pair, force_side = 0 <= r < stage2_pair, stage2_pair <= r < stage2_pair + stage2_side
            force_exist = r < 0 or stage2_pair + stage2_side <= r < stage2_pair + stage2_side + stage2_exist
            examples.append(
                sample_example(
                    rng, warm=warm, arch=arch, force_pair=force_pair, force_side=force_side, force_exist=force_exist
                )
            )
        batch = collate(examples, processor)
        card_l, pip_l, count_l, side_l = (batch.pop(k, None) for k in PATCH_LABEL_KEYS)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()  # (B, T-1, V)
        target = labels[:, 1:]
        tok_loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")  # (B, T-1)
        n_tok = (target != IGNORE).sum(-1).clamp_min(1)
        loss = (tok_loss.sum(-1) / n_tok).mean()  # per-example mean: a 1-token answer weighs as much as a sentence
        aux_loss = torch.zeros(())
        if aux != "none" and card_l is not None:
            proj = captured["proj"]  # (n_img, G*G, width)
            if aux == "hinge":
                emb = model.get_input_embeddings().weight
                obj_l = torch.where(card_l == IGNORE, card_l, (card_l > 0).long())
                m = POS_MARGIN
                aux_loss = (
                    hinge_alignment(proj, card_l, emb[card_word_ids], pos=m["card"])
                    + hinge_alignment(proj, pip_l, emb[pip_word_ids], pos=m["pip"])
                    + hinge_alignment(proj, obj_l, emb[card_id][None], pos=m["object"])
                    + hinge_alignment(proj, count_l, emb[count_word_ids], pos=m["count"])
                    + hinge_alignment(proj, side_l, emb[side_word_ids], pos=m["side"])
                    + scale_match(proj, emb)
                )
            elif aux in ("tied", "tied-cls"):
                emb = model.get_input_embeddings().weight
                card_w = torch.cat([aux_mod["none_card"][None], emb[card_word_ids]])  # (7, width)
                pip_w = torch.cat([aux_mod["none_pip"][None], emb[pip_word_ids]])  # (5, width)
                pn = F.normalize(proj, dim=-1)
                card_logits = aux_mod["scale"] * pn @ F.normalize(card_w, dim=-1).T  # (n_img, G*G, 7)
                pip_logits = aux_mod["scale"] * pn @ F.normalize(pip_w, dim=-1).T
            else:
                logits = head(proj)
                card_logits, pip_logits = logits[..., : len(CARD_CLASSES)], logits[..., len(CARD_CLASSES) :]
            if aux != "hinge":
                aux_loss = F.cross_entropy(
                    card_logits.flatten(0, 1), card_l.flatten(), ignore_index=IGNORE
                ) + F.cross_entropy(
                    pip_logits.flatten(0, 1),
                    pip_l.flatten(),
                    ignore_index=IGNORE,
                )
            if aux == "untied":  # same scale control as ``hinge``; the head itself is not tied to any word
                aux_loss = aux_loss + scale_match(proj, model.get_input_embeddings().weight)
            if aux == "tied":  # alignment: a card patch points along e(colour) + e("card") (+ e(pip colour))
                emb = model.get_input_embeddings().weight
                want = torch.zeros_like(proj)  # (n_img, G*G, width)
                on_card, on_pip = card_l > 0, pip_l > 0
                want[on_card] = emb[card_word_ids[card_l[on_card] - 1]] + emb[card_id]
                want[on_pip] = want[on_pip] + emb[pip_word_ids[pip_l[on_pip] - 1]]
                sel = on_card | on_pip
                if bool(sel.any()):
                    aux_loss = aux_loss + (1 - F.cosine_similarity(proj[sel], want[sel], dim=-1)).mean()
        total = loss + aux_weight * aux_loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            rec = {
                "step": step,
                "loss": round(float(loss.detach()), 4),
                "aux": round(float(aux_loss.detach()), 4),
                "lr": lr_at(step),
                "elapsed_s": round(time.time() - t0, 1),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", aux=f"{float(aux_loss.detach()):.3f}")
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            torch.save(
                {
                    "model": model.state_dict(),
                    "aux": aux_mod.state_dict(),
                    "head": head.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step + 1,
                },
                ckpt.with_suffix(".tmp"),
            )
            ckpt.with_suffix(".tmp").replace(ckpt)
    log.close()
    final = out / "model"
    model.eval()
    model.save_pretrained(final)
    processor.save_pretrained(final)
    (final / "training_args.json").write_text(
        json.dumps(
            {
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "aux": aux,
                "aux_weight": aux_weight,
                "warm_frac": warm_frac,
                "threads": threads,
                "stage2_steps": stage2_steps,
                "stage2_pair": stage2_pair,
                "stage2_side": stage2_side,
                "stage2_exist": stage2_exist,
                "stage2_lr": stage2_lr,
                "stage3_steps": stage3_steps,
                "stage3_exist": stage3_exist,
                "stage3_lr": stage3_lr,
            },
            indent=1,
        )
    )
    return final


def main(argv: list[str] | None = None) -> int:
    """Command line of the training script."""
    ap = argparse.ArgumentParser(prog="focus train-embedded", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/embedded"), help="run folder (checkpoint, log, model/)")
    ap.add_argument("--steps", type=int, default=4500, help="all steps, the second stage's included")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aux", choices=["hinge", "tied", "tied-cls", "untied", "none"], default="hinge")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stage2-steps", type=int, default=1000, help="last N steps: a second stage (0: none)")
    ap.add_argument("--stage2-pair", type=float, default=0.45, help="share of binding examples in stage 2")
    ap.add_argument("--stage2-side", type=float, default=0.25, help="share of single-card side questions in stage 2")
    ap.add_argument(
        "--stage2-exist", type=float, default=0.0, help="share of existence questions with hard negatives in stage 2"
    )
    ap.add_argument("--stage2-lr", type=float, default=0.5, help="stage 2 restarts at this multiple of --lr")
    ap.add_argument("--stage3-steps", type=int, default=0, help="N more steps after stage 2 (counted in --steps)")
    ap.add_argument("--stage3-exist", type=float, default=0.25, help="share of existence questions in stage 3")
    ap.add_argument("--stage3-lr", type=float, default=0.2, help="stage 3 restarts at this multiple of --lr")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        check_stages(
            a.steps, a.stage2_steps, a.stage2_pair + a.stage2_side + a.stage2_exist, a.stage3_steps, a.stage3_exist
        )
    except ValueError as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO)
    path = train(
        a.out,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        aux=a.aux,
        threads=a.threads,
        progress=not a.no_progress,
        stage2_steps=a.stage2_steps,
        stage2_pair=a.stage2_pair,
        stage2_side=a.stage2_side,
        stage2_exist=a.stage2_exist,
        stage2_lr=a.stage2_lr,
        stage3_steps=a.stage3_steps,
        stage3_exist=a.stage3_exist,
        stage3_lr=a.stage3_lr,
    )
    logger.info("model written to %s", path)
    return 0


def export_checkpoint(run_dir: Path, out: Path, arch: EmbeddedArch | None = None) -> Path:
    """Write the model of ``run_dir/ckpt.pt`` (e.g. of an unfinished run) in the hub layout to ``out``."""
    import torch

    arch = arch or EmbeddedArch()
    processor = build_processor(arch)
    tok = processor.tokenizer
    model = build_model(
        len(tok), tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, arch
    )
    model.load_state_dict(torch.load(run_dir / "ckpt.pt", weights_only=False)["model"])
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


if __name__ == "__main__":
    raise SystemExit(main())

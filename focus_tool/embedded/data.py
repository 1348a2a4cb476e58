"""Training data of the embedded model: examples sampled from the synthetic world, patch labels, batching.

What the model is taught (every example is an (image, prompt) -> answer pair in LLaVA-1.5's chat format):
- existence: "Is there a {colour} card in the image?" -> Yes / No, on global views and on crops;
- questions on views where the card is at least 8 px wide in the 96-px model input: pip colour, pip count (only
  where the pips are >= 3.5 px, and then half the time), left / right of two cards, as one-word answers (60 %) or
  lettered multiple choice (40 %);
- target naming: the default Stage-I extraction prompt (text only) -> "I need the info about red card.";
- second-stage examples (``force_pair`` / ``force_side`` / ``force_exist`` of :func:`sample_example`).
Why each rule is there (the runs that motivated it) is logged in ``model/MODEL_CARD.md``.

The data stream is a pure function of (seed, step), so a run resumed from its checkpoint sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import ANSWER_SUFFIX, EmbeddedArch
from focus_tool.ops.images import pad_to_square
from focus_tool.prompts import LETTERS, format_options
from focus_tool.steps.targets import DEFAULT_EXTRACT_PROMPT

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
_PIP_RADIUS = syn._PIP_RADIUS
OPEN_ANSWER_SHARE = 0.6  # one-word answers (what the logit scheme scores); the rest lettered multiple choice


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
        pool = list(syn.ANSWERS[kind])
        rng.shuffle(pool)
        q = q + " " + " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(pool))
    if rng.random() < 0.15:
        q = syn.existence_question(names[0])
        kind = "attribute"
    targets = names if kind == "relative" else names[:1]
    answer = "I need the info about " + " and ".join(targets) + "."
    return Example(prompt=DEFAULT_EXTRACT_PROMPT.replace("{question}", q), answer=answer)


def patch_labels(
    scene: syn.Scene, window: tuple[float, float, float, float], grid: int, view_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-patch card-colour, pip-colour, pip-count and side (left / right half) classes for the padded square
    view of ``window``.
    """
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
    which the benchmark never asks).
    """
    q = f"Is the {card.name} on the left or right side?"
    correct = "left" if card.center[0] < mid_x else "right"
    if rng.random() < OPEN_ANSWER_SHARE:
        return q, correct
    opts = list(syn.SIDES)
    rng.shuffle(opts)
    return format_options(q, opts, ANSWER_SUFFIX), LETTERS[opts.index(correct)]


def clutter_leanings(scene: syn.Scene, window: tuple[float, float, float, float]) -> list[str]:
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
    colour seen only as a sliver of a card, or one a clutter shape is tinted toward).
    """
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
    card_l, pip_l, count_l, side_l = patch_labels(scene, window, grid, arch.image_size)

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
            hard += sorted({k for k in clutter_leanings(scene, window) if k not in touching})
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

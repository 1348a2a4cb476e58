"""Where the embedded model's left / right answer gets lost: vision side, reading the side, or picking the card.

    python benchmarks/embedded_relative_probe.py focus_tool/embedded/model      # a model folder (hub layout)

1. On the first 40 relative questions of the test split, for crops of the pair grown 3x (the oracle crop), 2x and 1.4x:
   the model's answer (V* logit matching, as the benchmark scores it), how often it says "right", and whether the
   projector output at the first-named card (the argmax cell of its vision-only map) is closer to the input embedding
   of the correct side word than to the other one.
2. On 40 held-out training-distribution left / right examples (stream 7, open answers): the share answered right by
   comparing the next-token logits of "left" and "right", and the share of "left".
3. Picking the named card, on 40 held-out views framing a side-by-side pair whose cards have different dot colours
   (stream 8): the dot colour of each card (open answer, argmax over the four dot-colour words), how often the same
   colour is named for both cards, and left / right of each card relative to the other (80 questions).
4. Reading the side, on 60 views holding one card in their left or right half (stream 9): "Is the {colour} card on
   the left or right side?" answered from the logits, and whether the projector output averaged over the card's
   patches is closer to the input embedding of the correct side word.
Single thread, about two minutes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from typing import Any

import numpy as np
import torch

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import EmbeddedArch
from focus_tool.embedded.data import PATCH_LABEL_KEYS, Example, collate, patch_labels, sample_example
from focus_tool.eval.synthetic import _oracle_box, _vision_only_map
from focus_tool.ops.images import pad_to_square
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from focus_tool.steps.answer import crop


def test_split_probe(model: str, n: int = 40) -> Counter[tuple[float, str]]:
    adapter = load_adapter(model)
    if not isinstance(adapter, LlavaAdapter):
        raise SystemExit("the probe needs a LLaVA-family checkpoint (the embedded model)")
    pipe = FocusPipeline(adapter, config_for(adapter, model))
    items = [it for it in syn.benchmark_items(0, 300) if it.question.kind == "relative"][:n]
    res: Counter[tuple[float, str]] = Counter()
    for it in items:
        q = it.question
        image = syn.render(it.scene)
        gt = np.asarray(q.target_boxes_xyxy)
        correct = q.options[0]
        for grow in (3.0, 2.0, 1.4):
            view = crop(image, _oracle_box(gt, image.size, grow=grow))
            answer = (pipe.vanilla(view, question=q.text, options=["left", "right"]).answer or "").strip()
            res[(grow, "answer right")] += answer == correct
            res[(grow, "answer is 'right'")] += answer == "right"
            cell = int(_vision_only_map(adapter, view, q.targets[0]).argmax())
            left = _vision_only_map(adapter, view, "left")[cell]
            right = _vision_only_map(adapter, view, "right")[cell]
            res[(grow, "vision side right")] += ("left" if left > right else "right") == correct
    return res


def training_view_probe(model: str, n: int = 40) -> tuple[float, float]:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    lm = LlavaForConditionalGeneration.from_pretrained(model).eval()
    processor = AutoProcessor.from_pretrained(model)
    left_id, right_id = processor.tokenizer.convert_tokens_to_ids(["left", "right"])
    ok, said_left = [], []
    for i in range(5000):
        ex = sample_example(np.random.default_rng([7, 7, i]), warm=False, arch=EmbeddedArch())
        if "left or right" not in ex.prompt or ex.answer not in ("left", "right"):
            continue
        truth = ex.answer
        logits = _next_logits(lm, processor, ex)
        pred = "left" if float(logits[left_id]) > float(logits[right_id]) else "right"
        ok.append(pred == truth)
        said_left.append(pred == "left")
        if len(ok) >= n:
            break
    return float(np.mean(ok)), float(np.mean(said_left))


def _next_logits(lm: Any, processor: Any, ex: Example) -> torch.Tensor:
    """(V,) next-token logits at the last prompt token of ``ex`` (training chat format; its answer is not read)."""
    ex = dataclasses.replace(ex, answer="x")  # a one-token placeholder reply: read the logits before it
    batch = collate([ex], processor)
    for k in ("labels", *PATCH_LABEL_KEYS):
        batch.pop(k, None)
    with torch.no_grad():
        return lm(**batch).logits[0, -3]  # at the last prompt token (then "x", end of sequence)


def _logits(lm: Any, processor: Any, image: Any, prompt: str, scene: syn.Scene, window: Any) -> torch.Tensor:
    """Next-token logits after ``prompt`` on ``image`` (the training chat format), (V,)."""
    labels = patch_labels(scene, window, EmbeddedArch().image_size // EmbeddedArch().patch_size, 96)
    ex = Example(prompt=prompt, answer="x", image=image, **dict(zip(PATCH_LABEL_KEYS, labels, strict=True)))
    return _next_logits(lm, processor, ex)


def pair_probe(model: str, n: int = 40) -> dict[str, float]:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    lm = LlavaForConditionalGeneration.from_pretrained(model).eval()
    processor = AutoProcessor.from_pretrained(model)
    tok = processor.tokenizer
    pip_ids = tok.convert_tokens_to_ids(list(syn.PIP_COLORS))
    side_ids = tok.convert_tokens_to_ids(list(syn.SIDES))
    colour_ok: list[bool] = []
    same: list[bool] = []
    side_ok: list[bool] = []
    for i in range(10 * n):
        rng = np.random.default_rng([8, i])
        colours = list(syn.CARD_COLORS)
        rng.shuffle(colours)
        cs = float(rng.uniform(60, 100))
        scene = syn.sample_scene(
            rng,
            size_wh=(1400, 1000),
            card_side=cs,
            n_cards=int(rng.integers(2, 6)),
            target_colors=tuple(colours[:2]),
            distractor_colors=tuple(colours[2:4]),
            n_clutter=int(rng.integers(0, 8)),
            pair_near=True,
        )
        a, b = scene.cards[0], scene.cards[1]
        if a.pip_color == b.pip_color:
            continue
        margin = cs * float(rng.uniform(0.5, 2.5))
        x0, y0 = min(a.xyxy[0], b.xyxy[0]) - margin, min(a.xyxy[1], b.xyxy[1]) - margin
        x1, y1 = max(a.xyxy[2], b.xyxy[2]) + margin, max(a.xyxy[3], b.xyxy[3]) + margin
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        window = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        image = pad_to_square(syn.render(scene, window, max_side=384))
        named = []
        for card, other in ((a, b), (b, a)):
            lg = _logits(lm, processor, image, syn.question_text("attribute", (card.name,)), scene, window)
            named.append(list(syn.PIP_COLORS)[int(torch.argmax(lg[pip_ids]))])
            colour_ok.append(named[-1] == card.pip_color)
            lg = _logits(lm, processor, image, syn.question_text("relative", (card.name, other.name)), scene, window)
            truth = "left" if card.center[0] < other.center[0] else "right"
            side_ok.append(list(syn.SIDES)[int(torch.argmax(lg[side_ids]))] == truth)
        same.append(named[0] == named[1])
        if len(same) >= n:
            break
    return {
        "dot colour of a named card": float(np.mean(colour_ok)),
        "same colour named for both": float(np.mean(same)),
        "left / right of the other": float(np.mean(side_ok)),
    }


def solo_side_probe(model: str, n: int = 60) -> dict[str, float]:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    lm = LlavaForConditionalGeneration.from_pretrained(model).eval()
    processor = AutoProcessor.from_pretrained(model)
    side_ids = processor.tokenizer.convert_tokens_to_ids(list(syn.SIDES))
    emb = lm.get_input_embeddings().weight.detach()
    grid = EmbeddedArch().image_size // EmbeddedArch().patch_size
    lm_ok, vision_ok = [], []
    for i in range(n):
        rng = np.random.default_rng([9, i])
        cs = 100.0
        colour = list(syn.CARD_COLORS)[i % len(syn.CARD_COLORS)]
        scene = syn.sample_scene(rng, size_wh=(1000, 1000), card_side=cs, n_cards=1, distractor_colors=(colour,))
        card = scene.cards[0]
        side = cs * float(rng.uniform(3, 6))
        off = cs * float(rng.uniform(0.6, side / cs / 2 - 0.7)) * (1 if i % 2 else -1)
        cx, cy = card.center[0] - off, card.center[1] + float(rng.uniform(-0.5, 0.5)) * cs
        window = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        image = pad_to_square(syn.render(scene, window, max_side=384))
        truth = "left" if card.center[0] < cx else "right"
        lg = _logits(lm, processor, image, f"Is the {card.name} on the left or right side?", scene, window)
        lm_ok.append(list(syn.SIDES)[int(torch.argmax(lg[side_ids]))] == truth)
        card_cells = torch.as_tensor(patch_labels(scene, window, grid, 96)[0] > 0)
        pv = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            feats = lm.get_image_features(
                pixel_values=pv, vision_feature_layer=-1, vision_feature_select_strategy="default"
            )
        f = getattr(feats, "pooler_output", feats)
        f = (f[0] if isinstance(f, (list, tuple)) else f).reshape(-1, emb.shape[-1])[card_cells]  # (n_cells, width)
        cos = [float(torch.nn.functional.cosine_similarity(f, emb[j][None]).mean()) for j in side_ids]
        vision_ok.append(list(syn.SIDES)[int(np.argmax(cos))] == truth)
    return {"language model": float(np.mean(lm_ok)), "vision side": float(np.mean(vision_ok))}


def main(model: str) -> None:
    torch.set_num_threads(1)
    for (grow, what), count in sorted(test_split_probe(model).items()):
        print(f"crop {grow}x pair  {what:20s} {count}/40")
    acc, left = training_view_probe(model)
    print(f"held-out training views: answered right {acc:.2f}, said 'left' {left:.2f} (n = 40)")
    for what, value in pair_probe(model).items():
        print(f"pair views (40 pairs, 80 questions): {what:28s} {value:.3f}")
    for what, value in solo_side_probe(model).items():
        print(f"one card in a half of the view (60): {what:16s} {value:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "focus_tool/embedded/model")

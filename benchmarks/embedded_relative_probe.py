"""Where the embedded model's left / right answer gets lost: vision side or language model.

    python benchmarks/embedded_relative_probe.py focus_tool/embedded/model      # a model folder (hub layout)

1. On the first 40 relative questions of the test split, for crops of the pair grown 3x (the oracle crop), 2x and 1.4x:
   the model's answer (V* logit matching, as the benchmark scores it), how often it says "right", and whether the
   projector output at the first-named card (the argmax cell of its vision-only map) is closer to the input embedding
   of the correct side word than to the other one.
2. On 40 held-out training-distribution left / right examples (stream 7, open answers): the share answered right by
   comparing the next-token logits of "left" and "right", and the share of "left".
Single thread, about a minute.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import torch

from focus_tool.adapters.llava import LlavaAdapter
from focus_tool.adapters.registry import load_adapter
from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import EmbeddedArch
from focus_tool.embedded.train import PATCH_LABEL_KEYS, collate, sample_example
from focus_tool.eval.synthetic import _oracle_box, _vision_only_map
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
        truth, ex.answer = ex.answer, "x"  # a one-token placeholder reply: read the logits before it
        batch = collate([ex], processor)
        for k in ("labels", *PATCH_LABEL_KEYS):
            batch.pop(k, None)
        with torch.no_grad():
            logits = lm(**batch).logits[0, -3]  # (V,) at the last prompt token (then "x", end of sequence)
        pred = "left" if float(logits[left_id]) > float(logits[right_id]) else "right"
        ok.append(pred == truth)
        said_left.append(pred == "left")
        if len(ok) >= n:
            break
    return float(np.mean(ok)), float(np.mean(said_left))


def main(model: str) -> None:
    torch.set_num_threads(1)
    for (grow, what), count in sorted(test_split_probe(model).items()):
        print(f"crop {grow}x pair  {what:20s} {count}/40")
    acc, left = training_view_probe(model)
    print(f"held-out training views: answered right {acc:.2f}, said 'left' {left:.2f} (n = 40)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "focus_tool/embedded/model")

"""Qwen3-VL adapter (``Qwen3VLForConditionalGeneration``, e.g. Qwen/Qwen3-VL-2B-Instruct, Qwen/Qwen3-VL-8B-Instruct).

The token layout is Qwen2.5-VL's, so this adapter is :class:`~focus_tool.adapters.qwen2_5_vl.Qwen25VLAdapter` with
its own names, prompt fallback and documentation; what differs is checked, not assumed (tests/test_adapter_qwen3_vl.py).

Loading without torchvision: the hub's ``preprocessor_config.json`` names ``Qwen2VLImageProcessorFast`` (processor
``Qwen3VLProcessor``, which needs a video processor); ``AutoImageProcessor`` resolves it to the PIL backend
(``Qwen2VLImageProcessorPil``), and the adapter expands ``<|image_pad|>`` itself to ``t * g_h * g_w / merge^2`` tokens
[hf: ``Qwen3VLProcessor.replace_image_token``] and passes ``mm_token_type_ids`` (the model refuses image inputs
without them).

Geometry: native resolution, as Qwen2.5-VL but with **16-px patches** merged 2 x 2, so one map cell is a 32 x 32 px
cell of the ``smart_resize``d image (multiples of 32 px, pixel count in [min_pixels, max_pixels] from the loaded
processor: 256^2 .. 4096^2 on the hub). The merged tokens are contiguous and row-major over (g_h / 2) x (g_w / 2)
(``image_grid_thw`` = (1, g_h, g_w)); they form the map grid, which spans the whole image: ``PatchGrid.stretched``.
The vision tower's learned position table (48 x 48 on the hub) is resized to the grid inside the tower; the
number and order of tokens do not depend on it.

Interleaved M-RoPE [hf: ``Qwen3VLTextRotaryEmbedding.recomposition_frequencies``]: the rotary frequencies are dealt
to the (t, h, w) position streams in turn (T, H, W, T, H, W, ...) instead of Qwen2.5-VL's three contiguous sections;
the positions themselves are Qwen2.5-VL's (``get_rope_index``: an image token at row r, column c gets (s, s + r,
s + c); the text after it continues at s + max(rows, cols)). RoPE rotates queries and keys only; values carry no
position term, so M-RoPE does not touch the V-V map. Continuations of a prefill (shared-prefix option scoring) take
text positions shifted by the model's ``rope_deltas``, as for Qwen2.5-VL.

DeepStack: what it does to the cached values [hf: ``Qwen3VLTextModel.forward``, ``_deepstack_process``]. The tower
returns, besides the merged image features scattered into the input embeddings, one extra merged feature map per
``deepstack_visual_indexes`` entry (vision layers 8, 16, 24 on the 8B; 5, 11, 17 on the 2B). The language model adds
the k-th of them to the hidden states **of the image-token positions only**, right **after the whole decoder layer k**
(attention and MLP, residual included) for k = 0 .. n - 1 (n = 3: after LM layers 0, 1, 2). The cache of layer i
holds ``v_proj(input_layernorm(h_i))`` of that layer's input h_i, so:

- layer 0's cached image values hold no DeepStack term (the merger's output embeddings only);
- layer i (1 <= i <= n) holds the additions of layers 0 .. i - 1; every layer i >= n holds all n of them;
- text tokens (the target's among them) never receive an addition; they see the image tokens' added features
  through attention from layer 1 on.

The map reads the cached values as stored (per KV head, GQA; docs/method.md, Stage III), so from layer n on it compares
text values with image values that carry the multi-level visual features; the preset's layers lie far beyond n. Beware
``output_hidden_states``: transformers records each decoder layer's output *before* the DeepStack addition, so
``hidden_states[i]`` is not layer i's input at image positions for 1 <= i <= n; a reference computation must hook the
layers' inputs (the test does, and checks hidden_states[i] + feature_{i-1} = input_i at image positions).

Encoded-image prefix cache (``supports_image_cache``): not reused. DeepStack does not prevent it (the additions
touch image positions only, which all lie in the prefix, and a suffix forward without pixel inputs adds nothing to
the text), but the M-RoPE positions do: as for Qwen2.5-VL, the positions of the text after the image come from
``rope_deltas`` kept as model state and overwritten by every other call, and the suffix forward of
:class:`~focus_tool.adapters.prefix_cache.ImagePrefixCache` passes no position ids, so on a hit the question's
positions would not be the full prefill's. Reuse needs the cache entry to keep its prefix's ``rope_deltas`` and the
suffix forward to take ``position_ids = arange(cut, N) + deltas`` (a hook the prefix cache does not have).

K-K ablation (``keys_norope``): the base hooks ``k_proj``; Qwen3's attention applies a per-head RMSNorm (``k_norm``)
to its output before RoPE, so those keys are pre-norm, not the keys the attention uses (values are unaffected).

Answer step (``answer_mode = "multi"``): the checkpoint's template renders content items in order, each image as its
own vision block with its own ``image_grid_thw`` row, as Qwen2.5-VL's; it writes **no default system message**.
"""

from __future__ import annotations

from focus_tool.adapters.qwen2_5_vl import Qwen25VLAdapter
from focus_tool.errors import ModelLoadError

_TURN = "<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"  # no system turn unless one is given
_VISION_BLOCK = "<|vision_start|>{}<|vision_end|>"


class Qwen3VLAdapter(Qwen25VLAdapter):
    """Adapter for ``Qwen3VLForConditionalGeneration`` checkpoints (native resolution, DeepStack; multi-image answer).

    ``deepstack_layers``: n, the number of first LM layers after which visual features are added at the image
    positions (the cached values of layers 1 .. n and beyond carry them; module docstring).
    """

    preset_name = "qwen3-vl"
    family = "Qwen3-VL"
    model_class_name = "Qwen3VLForConditionalGeneration"

    def _configure(self) -> None:
        """Qwen2.5-VL's settings, then the number of DeepStack feature maps (at most the LM's layers)."""
        super()._configure()
        self.deepstack_layers: int = len(self.model.config.vision_config.deepstack_visual_indexes)
        if self.deepstack_layers > self.num_layers:
            raise ModelLoadError(
                f"{self.deepstack_layers} DeepStack feature maps but only {self.num_layers} language-model layers"
            )

    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        """One user turn as the Qwen3-VL template renders it: items in order, no system turn."""
        vision = _VISION_BLOCK.format(self.image_token)
        return _TURN.format(body="".join(vision if c["type"] == "image" else c["text"] for c in content))

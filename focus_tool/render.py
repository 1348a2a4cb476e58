"""Pictures of a result: the relevance map as a heat layer and the ranked boxes with labels."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from focus_tool.result import FocusResult

_PALETTE = ((255, 64, 64), (64, 160, 255), (255, 200, 0), (160, 80, 255))


def _heat(values: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8, black-red-yellow-white ramp."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(v * 3, 0, 1)
    g = np.clip(v * 3 - 1, 0, 1)
    b = np.clip(v * 3 - 2, 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, result: FocusResult, *, alpha: float = 0.45, max_side: int = 1600) -> Image.Image:
    """The image with every target's relevance map blended in and the regions drawn (best first, labelled).

    Boxes are drawn exactly at ``result.regions[i].box`` (scaled only if the picture is downscaled).
    """
    base = image.convert("RGB")
    scale = min(1.0, max_side / max(base.size))
    if scale < 1.0:
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BICUBIC)
    canvas = base.copy()
    if result.relevance_maps:
        acc = np.zeros((base.height, base.width))
        for m in result.relevance_maps:
            vals = np.asarray(m.values, dtype=np.float64)
            vals = vals / vals.max() if vals.max() > 0 else vals
            x0, y0, x1, y1 = m.view_xyxy
            view_w, view_h = round((x1 - x0) * scale), round((y1 - y0) * scale)
            heat = Image.fromarray((vals * 255).astype(np.uint8)).resize(
                (max(view_w, 1), max(view_h, 1)), Image.Resampling.BILINEAR
            )
            layer = Image.new("L", base.size, 0)
            layer.paste(heat, (round(x0 * scale), round(y0 * scale)))
            acc = np.maximum(acc, np.asarray(layer, dtype=np.float64) / 255)
        heat_rgb = Image.fromarray(_heat(acc))
        canvas = Image.blend(base, heat_rgb, alpha)
    draw = ImageDraw.Draw(canvas)
    targets = list(dict.fromkeys(r.target for r in result.regions))
    for region in sorted(result.regions, key=lambda r: -r.rank):
        color = _PALETTE[targets.index(region.target) % len(_PALETTE)]
        box = [v * scale for v in region.box]
        width = 4 if region.selected else 2 if region.rank <= 3 else 1
        if region.rank > 5 and not region.selected:
            continue
        draw.rectangle(box, outline=color, width=width)
        conf = "-" if region.confidence is None else f"{region.confidence:.2f}"
        label = f"{region.id} {region.target} {conf}"
        tw = draw.textlength(label)
        draw.rectangle([box[0], max(0, box[1] - 12), box[0] + tw + 4, max(12, box[1])], fill=color)
        draw.text((box[0] + 2, max(0, box[1] - 12)), label, fill=(0, 0, 0))
    return canvas

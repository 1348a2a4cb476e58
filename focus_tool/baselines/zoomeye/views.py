"""ZoomEye's Global+Local views (upstream ``ZoomModelGlobalLocal``): padded square, outlined main image, zoomed view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

from focus_tool.baselines.zoomeye.prompts import BOX_RGB

Box = tuple[int, int, int, int]


def merge_boxes(boxes: Sequence[Box], buffer_px: int) -> list[Box]:
    """ZoomEye's ``merge_bbox_list``: merge any two xyxy boxes whose ``buffer_px``-grown copies overlap, until none do.

    Each pass walks the boxes in list order and merges each unused box with the first other unused box it touches
    (upstream ``threshold=0``: any overlap of the grown boxes merges).
    """
    out = list(boxes)
    changed = True
    while changed:
        changed = False
        merged: list[Box] = []
        used: set[int] = set()
        for i, a in enumerate(out):
            if i in used:
                continue
            for j, b in enumerate(out):
                if j == i or j in used:
                    continue
                if min(a[2], b[2]) + buffer_px > max(a[0], b[0]) - buffer_px and (
                    min(a[3], b[3]) + buffer_px > max(a[1], b[1]) - buffer_px
                ):
                    merged.append((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
                    used.update((i, j))
                    changed = True
                    break
            else:
                merged.append(a)
        out = merged
    return out


def _padded_square(image: Image.Image, fill: tuple[int, int, int]) -> tuple[Image.Image, int, int]:
    """A new square canvas of side max(W, H) with ``image`` centred (``expand2square``); returns it and (left, top)."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    s = max(w, h)
    left, top = (s - w) // 2, (s - h) // 2
    square = Image.new("RGB", (s, s), fill)
    square.paste(rgb, (left, top))
    return square, left, top


def _aspect_resize(image: Image.Image, long_px: int) -> Image.Image:
    """``image`` resized so its long side is ``long_px`` (ZoomModelQwenVL.resize_image)."""
    w, h = image.size
    size = (long_px, int(h * long_px / w)) if w > h else (int(w * long_px / h), long_px)
    return image.resize((max(1, size[0]), max(1, size[1])))


def root_view(
    image: Image.Image, *, main_px: int, main_view: Literal["square", "aspect"], fill: tuple[int, int, int]
) -> Image.Image:
    """The root's small view for the root filter (upstream ``root_anyres=False``): square or aspect-kept at main_px."""
    if main_view == "aspect":
        return _aspect_resize(image.convert("RGB"), main_px)
    return _padded_square(image, fill)[0].resize((main_px, main_px))


@dataclass(frozen=True)
class ZoomViews:
    """The two images of a Global+Local prompt and the boxes they show.

    Attributes:
        main: the main image with every (merged) patch outlined, at ``main_px``.
        zoom: the zoomed-in view: the union of the outlined boxes cut from the padded square, outline included.
        boxes_xyxy: the merged patches, original-image pixels.
        zoom_xyxy: the zoomed view's box in the padded square's pixels.
    """

    main: Image.Image
    zoom: Image.Image
    boxes_xyxy: list[Box]
    zoom_xyxy: Box


def zoom_views(
    image: Image.Image,
    patches: Sequence[Box],
    *,
    main_px: int,
    main_view: Literal["square", "aspect"],
    colour: Literal["red", "blue"],
    fill: tuple[int, int, int],
    merge_buffer_px: int,
) -> ZoomViews:
    """ZoomModelGlobalLocal / ZoomModelQwenVL ``process_nodes_to_image_list`` for non-root nodes.

    Args:
        image: the original image (W, H).
        patches: the nodes' expanded patches, xyxy in original-image pixels.
        main_px: the encoder input side (the main image's side, or long side for ``"aspect"``).
        main_view: ``"square"``: the padded square resized to main_px x main_px (LLaVA-OV); ``"aspect"``: the
            image area of the square, resized to long side main_px (Qwen2.5-VL).
        colour: the outline colour.
        fill: the padding colour of the square.
        merge_buffer_px: patches whose grown copies touch are merged first (:func:`merge_boxes`).

    The outline, ``t = max(1, S // 120)`` px wide on the S-px square, is drawn on the box grown by t (clipped to the
    square); the zoomed view is that grown box (of all boxes' union) cut from the drawn square.
    """
    if not patches:
        raise ValueError("zoom_views needs at least one patch")
    merged = merge_boxes(patches, merge_buffer_px)
    square, left, top = _padded_square(image, fill)
    side = square.width
    t = max(1, side // 120)
    draw = ImageDraw.Draw(square)
    grown: list[Box] = []
    for x0, y0, x1, y1 in merged:
        g = (max(0, x0 + left - t), max(0, y0 + top - t), min(side, x1 + left + t), min(side, y1 + top + t))
        draw.rectangle(g, outline=BOX_RGB[colour], width=t)
        grown.append(g)
    zoom_box = (min(g[0] for g in grown), min(g[1] for g in grown), max(g[2] for g in grown), max(g[3] for g in grown))
    zoom = square.crop(zoom_box)
    if main_view == "aspect":
        w, h = image.size
        main = _aspect_resize(square.crop((left, top, left + w, top + h)), main_px)
    else:
        main = square.resize((main_px, main_px))
    return ZoomViews(main, zoom, merged, zoom_box)

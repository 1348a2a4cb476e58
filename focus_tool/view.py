"""A result a person can look at: one self-contained HTML page, both an MCP App and a static file.

:func:`app_html` is one HTML document (inline CSS and JavaScript; no external fetch, font or image: its own
Content-Security-Policy forbids any network access, and the image travels as a ``data:`` URL). It shows the image
(downscaled for transport) with the ranked boxes in the rank colours of :data:`focus_tool.render.RANK_COLOURS`, the
region(s) the answer used marked (a thicker double line and an "answer" tag), the relevance map as a layer that can
be toggled and made more or less opaque (kept off the answer region, as :func:`focus_tool.render.overlay` keeps it),
and a text panel: the question, the answer, its confidence, the status in words and the warnings' messages.

Two modes, chosen by the page itself (``document.body.dataset.mode``):

- ``"static"``: :func:`static_html` embeds a payload (:func:`view_payload`) in a
  ``<script type="application/json" id="focus-payload">`` element; the page renders it at load, without any host.
  Clicking a region selects it and shows its details.
- ``"app"``: without an embedded payload the page is an MCP App View (ext-apps specification 2026-01-26, SEP-1865):
  it runs in the host's sandboxed iframe and speaks JSON-RPC 2.0 over ``window.parent.postMessage``. It sends
  ``ui/initialize``, then ``ui/notifications/initialized``; it remembers the arguments of
  ``ui/notifications/tool-input`` and renders the payload in ``_meta[VIEW_META_KEY]`` of the CallToolResult in
  ``ui/notifications/tool-result``. Clicking a region (or Enter / Space on it) sends ``tools/call`` to
  ``focus_zoom`` (the result has a question) or ``focus_find`` with the same arguments and that ``region_id``; the
  answer is rendered the same way, the previous view pushed on a history stack that the "Back" button pops.

DOM contract (the server's browser test reads it): ``#view-image`` (the ``<img>``), ``#heat`` (the map canvas),
``#heat-toggle`` (checkbox: the canvas's ``hidden``), ``#heat-opacity`` (range 0-100), ``#unscored-toggle``,
``#regions`` (one ``<button class="region">`` per region of the result: ``data-region-id``, ``data-rank``,
``data-answer="true"`` when the region is ``selected`` or its box is one of ``answer_boxes``, ``data-unscored="true"``
when its P(Yes) is null, ``hidden`` while unscored and "show unscored" is off; the answer's are never hidden),
``#question``, ``#answer``, ``#confidence``, ``#status`` (``data-question`` = the status's question state),
``#warnings`` (one ``<li data-code>`` per warning), ``#details``, ``#back``, ``#message`` (``data-kind`` "info",
"busy" or "error"). A region button's rectangle is its image-pixel box times the displayed width over
``image_wh[0]`` (and likewise for y). An answer box that is no region's box is a ``.answer-frame`` element with
``data-answer="true"`` and no ``data-region-id``. Every caller-provided string is set with ``textContent``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from focus_tool import __version__
from focus_tool.render import RANK_COLOURS
from focus_tool.result import FocusResult

__all__ = [
    "MCP_APPS_PROTOCOL_VERSION",
    "PAYLOAD_VERSION",
    "VIEW_JPEG_QUALITY",
    "VIEW_MAX_SIDE",
    "VIEW_META_KEY",
    "VIEW_MIME_TYPE",
    "app_html",
    "embedded_payload",
    "static_html",
    "view_jpeg",
    "view_payload",
]

VIEW_META_KEY = "focus-tool/view"  # in MCP, CallToolResult._meta[VIEW_META_KEY] carries the payload
PAYLOAD_VERSION = 1  # view_payload()["version"]; the page refuses any other
VIEW_MAX_SIDE = 1024  # long side of the transported image, px
VIEW_JPEG_QUALITY = 85  # the same quality as the agent surfaces' crops (focus_tool/agent/policy.py jpeg_quality)
MCP_APPS_PROTOCOL_VERSION = "2026-01-26"  # ext-apps specification/2026-01-26/apps.mdx
VIEW_MIME_TYPE = "text/html;profile=mcp-app"  # the MIME type of an MCP Apps ui:// resource
_PAYLOAD_MARKER = "<!--focus-payload-->"  # static_html puts the payload element here
_CONFIG_MARKER = "__FOCUS_VIEW_CONFIG__"  # replaced once, at import, by the page's constants
_PAYLOAD_OPEN = '<script type="application/json" id="focus-payload">'


def _script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` are written as JSON unicode escapes (u003c, u003e, u0026: the same JSON value), so no
    caller text can close the element or open a comment.
    """
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def view_jpeg(image: Image.Image, max_side: int = VIEW_MAX_SIDE) -> bytes:
    """The whole image as JPEG for transport: its long side at most ``max_side`` (aspect kept, never upscaled).

    Args:
        image: the image the result was made from (after EXIF transpose); any mode, converted to RGB (alpha is
            dropped: images reach the pipeline already composited, see :mod:`focus_tool.inputs`).
        max_side: the longest side of the JPEG, px.

    Returns:
        The JPEG bytes (quality :data:`VIEW_JPEG_QUALITY`).

    Raises:
        ValueError: ``max_side`` below 1.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1 px, got {max_side}")
    rgb = image.convert("RGB")
    scale = min(1.0, max_side / max(rgb.size))
    if scale < 1.0:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=VIEW_JPEG_QUALITY)
    return buf.getvalue()


def view_payload(jpeg: bytes, result: FocusResult) -> dict[str, Any]:
    """What the page renders: the transported image and the result whose boxes are drawn over it.

    Args:
        jpeg: the image as JPEG (:func:`view_jpeg`), any size with the image's aspect: boxes are scaled from
            ``result.image_wh`` to the displayed size.
        result: the result; an :class:`~focus_tool.agent.wire.AgentResult` (with ``session``) too, whose region
            ids the page shows and zooms into.

    Returns:
        ``{"version": 1, "image": "data:image/jpeg;base64,...", "image_wh": [W, H], "result": {...}}``, JSON-ready;
        ``image_wh`` is ``result.image_wh``, the frame of every box.

    Raises:
        ValueError: ``jpeg`` is not JPEG data.
    """
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("jpeg must be JPEG bytes (they start with FF D8); make them with view_jpeg(image)")
    return {
        "version": PAYLOAD_VERSION,
        "image": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"),
        "image_wh": [int(result.image_wh[0]), int(result.image_wh[1])],
        "result": result.model_dump(mode="json"),
    }


def static_html(image: Image.Image, result: FocusResult, *, max_side: int = VIEW_MAX_SIDE) -> str:
    """The page with the result embedded: it renders at load, in any browser, without a host or network.

    Args:
        image: the image the result was made from (after EXIF transpose; its size is ``result.image_wh``);
            downscaled by :func:`view_jpeg`.
        result: the result to show.
        max_side: the longest side of the embedded image, px (smaller files for many views, e.g. an eval's).

    Returns:
        The HTML document (UTF-8 text): :func:`app_html` with a
        ``<script type="application/json" id="focus-payload">`` element holding :func:`view_payload` (``<``, ``>``,
        ``&`` written as JSON unicode escapes).

    Raises:
        ValueError: the image's size is not ``result.image_wh``.
    """
    if image.size != tuple(result.image_wh):
        raise ValueError(
            f"image is {image.width}x{image.height} px but the result was made on {result.image_wh[0]}x"
            f"{result.image_wh[1]} px; pass the image the result was made from (after EXIF transpose)"
        )
    payload = _script_json(view_payload(view_jpeg(image, max_side), result))
    element = f"{_PAYLOAD_OPEN}{payload}</script>"
    return app_html().replace(_PAYLOAD_MARKER, element, 1)


def embedded_payload(html: str) -> dict[str, Any] | None:
    """The payload a :func:`static_html` page embeds, or None when ``html`` has none (or not one this module wrote).

    The element's text holds no ``<`` (written as a JSON escape), so it ends at the first ``</script>``.
    """
    start = html.find(_PAYLOAD_OPEN)
    if start < 0:
        return None
    start += len(_PAYLOAD_OPEN)
    end = html.find("</script>", start)
    try:
        payload = json.loads(html[start:end]) if end >= 0 else None
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and payload.get("version") == PAYLOAD_VERSION else None


_CONFIG = {
    "rankColours": [list(c) for c in RANK_COLOURS],  # focus_tool/render.py owns the rank colours
    "appName": "focus-tool",
    "appVersion": __version__,
    "protocolVersion": MCP_APPS_PROTOCOL_VERSION,
    "metaKey": VIEW_META_KEY,
    "payloadVersion": PAYLOAD_VERSION,
}


@functools.cache
def app_html() -> str:
    """The page (an MCP App without a payload; see the module docstring), read once from ``view_app.html`` next to
    this module: serve it as a ``ui://`` resource of MIME type :data:`VIEW_MIME_TYPE`.
    """
    template = Path(__file__).with_name("view_app.html").read_text(encoding="utf-8")
    return template.replace(_CONFIG_MARKER, _script_json(_CONFIG), 1)

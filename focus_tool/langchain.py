"""The LangChain surface: ``FocusZoomTool`` (name ``focus_zoom``), a thin tool over :class:`FocusService`.

The tool formats and never computes: the service opens the image under the agent policy, reuses or runs FOCUS and
cuts the crops. Content is a text block (compact JSON, enough without images) plus one base64 JPEG image block per
top crop; the artifact is the :class:`~focus_tool.service.AgentResult` object (a ``FocusResult`` with session
info).
Expected failures (``FocusError``) become ``ToolException`` so the model sees a fixable message.

Requires the ``langchain`` extra (``langchain-core``).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.messages.content import create_image_block, create_text_block
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from focus_tool.errors import FocusError
from focus_tool.service import AgentResult, FocusService, summary_json

ZOOM_DESCRIPTION = (
    "Zoom into small details of an image with a local vision model (FOCUS). Give the image (absolute image_path "
    "under an allowed folder, or image_base64) and a question about a detail, or a target object to find. Returns "
    "the answer, ranked regions with ids, boxes [x0, y0, x1, y1] in original-image pixels and confidences 0-1, and "
    "crops of the best regions as images. To look closer, call again with the same image and region_id set to a "
    "returned id: the search then runs inside that region, and boxes stay in original-image pixels."
)


class ZoomInput(BaseModel):
    """What the agent fills in. Construction-time settings (model, allowed folders, limits) live on the tool."""

    model_config = ConfigDict(extra="forbid")

    image_path: str = Field(
        default="", description="Absolute path of the image file under an allowed folder; empty if image_base64 is set."
    )
    image_base64: str = Field(
        default="", description="Base64-encoded PNG/JPEG/WebP bytes (max 3 MB decoded); empty if image_path is set."
    )
    question: str = Field(
        default="", description="Question about a small detail of the image, e.g. 'What does the sign say?'."
    )
    target: str = Field(
        default="", description="Object to find instead of (or besides) a question, e.g. 'red card'; may be empty."
    )
    region_id: str = Field(
        default="",
        description="Id of a region from an earlier focus_zoom result on the same image (e.g. 'r1') to zoom inside; "
        "empty to search the whole image.",
    )
    max_crops: int = Field(default=3, ge=1, le=8, description="How many ranked crops to return (1-8).")


class FocusZoomTool(BaseTool):
    """``focus_zoom``: answer a question on the relevant crops of an image and return the ranked crops."""

    name: str = "focus_zoom"
    description: str = ZOOM_DESCRIPTION
    args_schema: type[BaseModel] = ZoomInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True

    service: FocusService = Field(exclude=True)
    """The engine: policy, session cache and queue around one FocusPipeline."""
    return_images: bool = True
    """Add one JPEG image block per top crop (text alone is always sufficient)."""

    def _run(
        self,
        image_path: str = "",
        image_base64: str = "",
        question: str = "",
        target: str = "",
        region_id: str = "",
        max_crops: int = 3,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[list[dict[str, Any]], AgentResult]:
        try:
            outcome = self.service.zoom(
                image_path=image_path,
                image_base64=image_base64,
                question=question,
                target=target,
                region_id=region_id,
                max_crops=max_crops,
                return_images=self.return_images,
            )
        except FocusError as e:
            raise ToolException(str(e)) from e
        blocks: list[dict[str, Any]] = [dict(create_text_block(text=summary_json(outcome)))]
        blocks += [
            dict(create_image_block(base64=base64.b64encode(jpeg).decode("ascii"), mime_type="image/jpeg"))
            for jpeg in outcome.crops_jpeg
        ]
        return blocks, outcome.result

    async def _arun(
        self,
        image_path: str = "",
        image_base64: str = "",
        question: str = "",
        target: str = "",
        region_id: str = "",
        max_crops: int = 3,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[list[dict[str, Any]], AgentResult]:
        """Run the same synchronous path in a worker thread (the engine serialises inference)."""
        if run_manager is not None:
            await adispatch_custom_event(
                "focus_progress", {"stage": "running FOCUS"}, config={"callbacks": run_manager.get_child()}
            )
        out: tuple[list[dict[str, Any]], AgentResult] = await run_in_executor(
            None,
            self._run,
            image_path,
            image_base64,
            question,
            target,
            region_id,
            max_crops,
            run_manager.get_sync() if run_manager is not None else None,
        )
        if run_manager is not None:
            await adispatch_custom_event(
                "focus_progress", {"stage": "done"}, config={"callbacks": run_manager.get_child()}
            )
        return out

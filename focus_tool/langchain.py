"""The LangChain surface: ``FocusZoomTool`` (name ``focus_zoom``), a thin tool over :class:`FocusService`.

The tool formats and never computes: the service opens the image under the agent policy, reuses or runs FOCUS and
cuts the crops. Content is a text block (compact JSON, enough without images) plus one base64 JPEG image block per
top crop; the artifact is the :class:`~focus_tool.agent.AgentResult` object (a ``FocusResult`` with session
info).
Expected failures (``FocusError``) and arguments that fail the schema (a wrong type, an unknown name) become a
``ToolException`` with one line that says what to fix (:func:`focus_tool.arguments.argument_error`: caller text
quoted and truncated), so the model sees a fixable message and the next call is served. Async calls emit
``focus_progress`` custom events (``{"stage": ..., "fraction": ...}``): ``running FOCUS``, then each pipeline step
(``targets``, ``search <target>``, ``answer`` or ``regions``, ``done``). URL inputs follow the service's
:class:`~focus_tool.agent.AgentPolicy` (``allow_urls``, off by default).

Requires the ``langchain`` extra (``langchain-core``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.messages.content import create_image_block, create_text_block
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from focus_tool.agent import DEFAULT_CROPS, AgentPolicy, AgentResult, FocusService, ProgressFn, summary_json
from focus_tool.arguments import argument_error
from focus_tool.errors import FocusError
from focus_tool.pipeline import FocusPipeline
from focus_tool.world import describe

logger = logging.getLogger(__name__)

ZOOM_DESCRIPTION = (
    "Zoom into small details of an image with a local vision model (FOCUS). Give the image (absolute image_path "
    "under an allowed folder, or image_base64) and a question about a detail, or a target object to find. Returns "
    "the answer, ranked regions with ids, boxes [x0, y0, x1, y1] in original-image pixels and confidences 0-1, and "
    "crops of the best regions as images, and a status: per target found / not_found / ambiguous, whether the "
    "answer was made on a region or on the whole image because nothing was found, and warnings; check it before "
    "trusting the answer. To look closer, call again with the same image and region_id set to a returned id: the "
    "search then runs inside that region, and boxes stay in original-image pixels."
)


class ZoomInput(BaseModel):
    """What the agent fills in. Construction-time settings (model, allowed folders, limits) live on the tool."""

    model_config = ConfigDict(extra="forbid")

    image_path: str = Field(
        default="",
        description="Absolute path of the image file under an allowed folder (or an http(s) URL if the tool allows "
        "URLs); empty if image_base64 is set.",
    )
    image_base64: str = Field(
        default="",
        description=f"Base64-encoded PNG/JPEG/WebP bytes (max {AgentPolicy.max_base64_bytes / 1e6:g} MB decoded); "
        "empty if image_path is set.",
    )
    question: str = Field(
        default="", description="Question about a small detail of the image, e.g. 'How many dots are on the red card?'."
    )
    target: str = Field(
        default="", description="Object to find instead of (or besides) a question, e.g. 'red card'; may be empty."
    )
    region_id: str = Field(
        default="",
        description="The id field of a region in an earlier focus_zoom result on the same image, to zoom inside; "
        "empty to search the whole image.",
    )
    max_crops: int = Field(
        default=DEFAULT_CROPS,
        ge=1,
        le=AgentPolicy.max_crops,
        description=f"How many ranked crops to return (1-{AgentPolicy.max_crops}).",
    )


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

    def model_post_init(self, context: Any, /) -> None:
        """Append to the default description one sentence on what the service's model can see."""
        pipeline = self.service.pipeline
        if self.description == ZOOM_DESCRIPTION and isinstance(pipeline, FocusPipeline):
            self.description = f"{ZOOM_DESCRIPTION} {describe(pipeline.world, pipeline.adapter.model_id)}"

    def _parse_input(self, tool_input: str | dict[str, Any], tool_call_id: str | None) -> str | dict[str, Any]:
        """Validate the arguments; a failure is one-line ``ToolException`` (not pydantic's multi-line dump)."""
        try:
            return super()._parse_input(tool_input, tool_call_id)
        except ValidationError as e:
            raise ToolException(argument_error(e, ZoomInput.model_fields, tool=self.name)) from None

    def _run(
        self,
        image_path: str = "",
        image_base64: str = "",
        question: str = "",
        target: str = "",
        region_id: str = "",
        max_crops: int = DEFAULT_CROPS,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[list[dict[str, Any]], AgentResult]:
        return self._zoom(image_path, image_base64, question, target, region_id, max_crops, None)

    def _zoom(
        self,
        image_path: str,
        image_base64: str,
        question: str,
        target: str,
        region_id: str,
        max_crops: int,
        progress: ProgressFn | None,
    ) -> tuple[list[dict[str, Any]], AgentResult]:
        """The one synchronous path: call the service, turn the outcome into blocks + artifact.

        Region ids belong to this tool instance (the service's ``caller`` key): an agent holding another
        ``FocusZoomTool`` over the same service cannot zoom into them.
        """
        try:
            outcome = self.service.zoom(
                image_path=image_path,
                image_base64=image_base64,
                question=question,
                target=target,
                region_id=region_id,
                max_crops=max_crops,
                return_images=self.return_images,
                progress=progress,
                caller=f"langchain:{id(self):x}",
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
        max_crops: int = DEFAULT_CROPS,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[list[dict[str, Any]], AgentResult]:
        """Run the same synchronous path in a worker thread (the engine serialises inference), with progress events."""
        if run_manager is None:
            return await run_in_executor(
                None, self._zoom, image_path, image_base64, question, target, region_id, max_crops, None
            )
        loop = asyncio.get_running_loop()
        callbacks = run_manager.get_child()
        stages: list[str] = []

        async def emit(stage: str, fraction: float) -> None:
            stages.append(stage)
            await adispatch_custom_event(
                "focus_progress", {"stage": stage, "fraction": fraction}, config={"callbacks": callbacks}
            )

        def on_step(message: str, fraction: float) -> None:  # worker thread: hand the step to the loop, in order
            try:
                asyncio.run_coroutine_threadsafe(emit(message, fraction), loop).result(timeout=30)
            except Exception:  # progress is best effort: a closed loop or a failing handler must not stop FOCUS
                logger.debug("progress event %r dropped", message, exc_info=True)

        await emit("running FOCUS", 0.0)
        out: tuple[list[dict[str, Any]], AgentResult] = await run_in_executor(
            None, self._zoom, image_path, image_base64, question, target, region_id, max_crops, on_step
        )
        if stages[-1] != "done":  # a cache hit runs no step
            await emit("done", 1.0)
        return out

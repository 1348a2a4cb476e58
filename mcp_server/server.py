"""``create_server(settings)``: an ``MCPServer`` with ``focus_zoom``, ``focus_find`` and ``focus_allowed_roots``.

The tools only parse, call :class:`focus_tool.agent.FocusService` in a worker thread and format: a text block
(compact JSON, enough alone), one ``ImageContent`` JPEG per top crop, and ``structured_content`` whose schema is
:class:`focus_tool.agent.AgentResult` (the ``FocusResult`` plus session info). The model loads in the lifespan in
a background task, so the handshake never waits for weights; calls made during the load get progress heartbeats.

Progress: ``loading model (N s)`` while the weights load, ``running FOCUS``, then one notification per pipeline step
(``targets``, ``search <target>``, ``answer`` or ``regions``, ``done``) with a ``<step> (N s)`` heartbeat every second
in between. The pipeline runs in a worker thread; its step callback hands each step to the event loop through a
memory stream (``anyio.from_thread.run_sync``), and a task on the loop sends the notifications in order.

Result view (MCP Apps, ``io.modelcontextprotocol/ui``; SEP-2133): ``focus_zoom`` and ``focus_find`` are bound to
the ``ui://focus-tool/result.html`` resource (:func:`focus_tool.view.app_html`, served as
``text/html;profile=mcp-app``). A client that negotiated Apps also gets ``_meta["focus-tool/view"]`` on each result
(the image downscaled for transport plus the result, :func:`focus_tool.view.view_payload`), which the app draws; a
region click there is a ``tools/call`` with that ``region_id``. Any other client gets exactly the content above.

Arguments that fail the tools' schema (a wrong JSON type, a value out of range) are one ``is_error`` line naming the
argument (:func:`focus_tool.arguments.argument_error`), not pydantic's dump. Over HTTP, :func:`transport_security`
gives the SDK explicit Host / Origin allow-lists for the bound address (DNS-rebinding protection for every loopback
bind, not only the three spellings the SDK recognises by itself).
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.apps import Apps, client_supports_apps
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, ContentBlock, ImageContent, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo

from focus_tool import __version__
from focus_tool.adapters.registry import default_model_path
from focus_tool.agent import (
    DEFAULT_CROPS,
    AgentPolicy,
    AgentResult,
    FocusService,
    InferenceGate,
    Zoomable,
    ZoomOutcome,
    summary_json,
)
from focus_tool.arguments import argument_error
from focus_tool.errors import FocusError
from focus_tool.view import VIEW_MAX_SIDE, VIEW_META_KEY, app_html, view_payload
from focus_tool.world import describe, read_world
from mcp_server.settings import ServerSettings

logger = logging.getLogger(__name__)

PipelineFactory = Callable[[ServerSettings], Zoomable]

ZOOM_DESCRIPTION = (
    "Answer a question about a small detail of an image with a local vision model (FOCUS): it finds the relevant "
    "regions, ranks crops by the model's confidence and answers on the best crop. Give image_path (absolute, under "
    "an allowed folder; see focus_allowed_roots) or image_base64. Returns JSON text (answer, region ids, boxes "
    "[x0, y0, x1, y1] in original-image pixels, confidences 0-1, and a status: per target found / not_found / "
    "ambiguous, whether the answer was made on a region or on the whole image because nothing was found, and "
    "warnings; check it before trusting the answer), crop images, and the same data as structured content. To look "
    "closer, call again with the same image and region_id set to a returned id."
)
FIND_DESCRIPTION = (
    "Find an object in an image with a local vision model (FOCUS), without answering a question: returns ranked "
    "regions with ids, boxes [x0, y0, x1, y1] in original-image pixels and confidences 0-1, plus crop images. Give "
    "image_path (absolute, under an allowed folder) or image_base64, and the object to find, e.g. 'red card'. "
    "Pass region_id from an earlier result on the same image to search inside that region. The status says per "
    "target found / not_found (no region selected) / ambiguous (several match)."
)
ROOTS_DESCRIPTION = "List the folders image_path must be under, the size limits for images, and what the model can see."
VIEW_URI = "ui://focus-tool/result.html"  # the MCP Apps resource focus_zoom and focus_find name (focus_tool.view)

ImagePath = Annotated[
    str,
    Field(
        description="Absolute path of the image under an allowed folder (or an http(s) URL if this server allows "
        "URLs; see focus_allowed_roots); empty if image_base64 is set."
    ),
]
ImageBase64 = Annotated[
    str,
    Field(
        description=f"Base64-encoded PNG/JPEG/WebP bytes (max {AgentPolicy.max_base64_bytes / 1e6:g} MB decoded); "
        "empty if image_path is set."
    ),
]
RegionId = Annotated[
    str,
    Field(description="The id field of a region in an earlier result on the same image, to zoom inside; or empty."),
]
MaxCrops = Annotated[
    int,
    Field(
        ge=1,
        le=AgentPolicy.max_crops,
        description=f"How many ranked crops to return as images (1-{AgentPolicy.max_crops}).",
    ),
]
Question = Annotated[str, Field(description="Question about a small detail of the image.")]
Target = Annotated[str, Field(description="The object to find, e.g. 'red card'.")]


@dataclass
class ServerState:
    """What the lifespan owns: the engine once loaded, or why it failed."""

    ready: anyio.Event = field(default_factory=anyio.Event)
    service: FocusService | None = None
    load_error: str = ""
    load_seconds: float = 0.0


def default_pipeline(settings: ServerSettings) -> Zoomable:
    """Load the configured checkpoint (default: the embedded model) with its preset, as the Python API does
    (:meth:`FocusPipeline.from_pretrained`). Its own input policy is unused: the service passes admitted images.
    """
    from focus_tool.devices import resolve_device
    from focus_tool.pipeline import FocusPipeline

    return FocusPipeline.from_pretrained(settings.model, device=resolve_device(settings.device))


Step = tuple[str, float]  # (message, fraction) from the pipeline's progress callback


class _Progress:
    """Monotonic progress notifications for one call (a no-op unless the caller asked for progress)."""

    def __init__(self, ctx: Context[ServerState, Any]) -> None:
        self._ctx = ctx
        self._n = 0
        self.stage = "running FOCUS"  # what the heartbeat repeats: the last step started

    async def __call__(self, message: str) -> None:
        self._n += 1
        self.stage = message
        await self._ctx.report_progress(self._n, message=message)

    async def heartbeat(self, started: float) -> None:
        """Report ``<current step> (N s)`` once a second until cancelled."""
        while True:
            await anyio.sleep(1.0)
            self._n += 1
            await self._ctx.report_progress(self._n, message=f"{self.stage} ({time.perf_counter() - started:.0f} s)")

    async def forward(self, steps: MemoryObjectReceiveStream[Step]) -> None:
        """Send each pipeline step as a notification, in order, until the worker closes the stream."""
        async with steps:
            async for message, _fraction in steps:
                await self(message)


def _step_sender(send: MemoryObjectSendStream[Step]) -> Callable[[str, float], None]:
    """The pipeline's progress callback, for the worker thread: queue the step on the event loop (waits for the loop
    to take it, never for the network; a full or closed queue drops the step).
    """

    def on_step(message: str, fraction: float) -> None:
        try:
            anyio.from_thread.run_sync(send.send_nowait, (message, fraction))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError):
            logger.debug("progress step %r dropped", message)  # the call is ending; progress is best effort

    return on_step


def _format(outcome: ZoomOutcome, *, structured: bool) -> CallToolResult:
    """The tool result: JSON text, one JPEG per top crop, structured content; plus the view payload in ``_meta``
    when the service cut a view image (only for clients that negotiated MCP Apps).
    """
    content: list[ContentBlock] = [TextContent(type="text", text=summary_json(outcome))]
    content += [
        ImageContent(type="image", data=base64.b64encode(jpeg).decode("ascii"), mime_type="image/jpeg")
        for jpeg in outcome.crops_jpeg
    ]
    meta = None if outcome.view_jpeg is None else {VIEW_META_KEY: view_payload(outcome.view_jpeg, outcome.result)}
    return CallToolResult(
        content=content,
        structured_content=outcome.result.model_dump(mode="json") if structured else None,
        _meta=meta,
    )


_COMMON_ARGS = {"image_path": ImagePath, "image_base64": ImageBase64, "region_id": RegionId, "max_crops": MaxCrops}
TOOL_ARGUMENTS: dict[str, dict[str, FieldInfo]] = {  # what each tool's arguments must be, for one-line errors
    tool: {name: FieldInfo.from_annotation(kind) for name, kind in {**first, **_COMMON_ARGS}.items()}
    for tool, first in (("focus_zoom", {"question": Question}), ("focus_find", {"target": Target}))
}


def transport_security(settings: ServerSettings) -> TransportSecuritySettings:
    """DNS-rebinding protection with explicit allow-lists for the bound address (see
    :func:`mcp_server.settings.http_allow_lists`): a foreign ``Host`` gets 421, a foreign ``Origin`` 403.
    """
    hosts, origins = settings.http_allow_lists()
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class FocusMCPServer(MCPServer[ServerState]):
    """``MCPServer`` whose argument-validation failures are one line (the SDK's text is pydantic's dump)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[ServerState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call a tool; a ``ToolError`` caused by invalid arguments is re-raised as one line naming the argument."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            if isinstance(e, UnexpectedToolError) or not isinstance(e.__cause__, ValidationError):
                raise
            raise ToolError(argument_error(e.__cause__, TOOL_ARGUMENTS.get(name, {}), tool=name)) from e.__cause__


def create_server(
    settings: ServerSettings, *, pipeline_factory: PipelineFactory = default_pipeline
) -> MCPServer[ServerState]:
    """Build the server; nothing heavy happens until the lifespan starts, and then only in the background."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        state = ServerState()

        async def load() -> None:
            t0 = time.perf_counter()
            try:
                pipeline = await anyio.to_thread.run_sync(pipeline_factory, settings)
                state.service = FocusService(
                    pipeline,
                    settings.policy(),
                    gate=InferenceGate(max_waiting=settings.max_waiting, timeout_s=settings.timeout_s),
                    reuse_results=settings.reuse_results,
                )
                state.load_seconds = time.perf_counter() - t0
                logger.info("model ready in %.1f s", state.load_seconds)
            except FocusError as e:
                state.load_error = str(e)
                logger.error("model load failed: %s", e)
            except Exception as e:  # reported to every caller as a ToolError; traceback in the log
                state.load_error = f"{type(e).__name__}: {e}"
                logger.exception("model load failed")
            finally:
                state.ready.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(load)
            yield state  # the handshake completes at once
            tasks.cancel_scope.cancel()

    model = settings.model or str(default_model_path())
    seen = describe(read_world(model), model)  # what the model can see, from its folder: known before it loads
    annotations = ToolAnnotations(read_only_hint=True, open_world_hint=settings.allow_urls, idempotent_hint=True)
    structured = settings.structured_output

    async def serve(ctx: Context[ServerState, Any], **request: Any) -> CallToolResult:
        state = ctx.request_context.lifespan_context
        progress = _Progress(ctx)
        started = time.perf_counter()
        while not state.ready.is_set():
            await progress(f"loading model ({time.perf_counter() - started:.0f} s)")
            with anyio.move_on_after(1.0):
                await state.ready.wait()
        if state.service is None:
            raise ToolError(f"the model failed to load ({state.load_error}); see the server log")
        await progress("running FOCUS")
        # Region ids belong to the caller: an MCP session (handshake-era streamable HTTP; the transport routes a
        # request to the session its Mcp-Session-Id names and rejects unknown ids, so the header is the session's
        # own). Without a session (stdio: one client per process; protocol 2026-07-28: no sessions) the callers
        # share one key, and an id is protected by its unguessable token alone.
        session_id = (ctx.headers or {}).get("mcp-session-id", "")
        caller = f"mcp-session:{session_id}" if session_id else "mcp"
        send, receive = anyio.create_memory_object_stream[Step](max_buffer_size=64)
        zoom = functools.partial(
            state.service.zoom,
            return_images=settings.return_images,
            progress=_step_sender(send),
            caller=caller,
            view_max_side=VIEW_MAX_SIDE if client_supports_apps(ctx) else 0,  # others get today's result only
            **request,
        )

        def work() -> ZoomOutcome | FocusError:  # expected failures come back as values, not through the task group
            try:
                return zoom()
            except FocusError as e:
                return e

        async with anyio.create_task_group() as beats:
            beats.start_soon(progress.heartbeat, time.perf_counter())
            async with anyio.create_task_group() as steps:  # exits once every step notification is out
                steps.start_soon(progress.forward, receive)
                outcome = await anyio.to_thread.run_sync(work)
                send.close()  # on the loop: the forwarder sends what is queued, then ends
            beats.cancel_scope.cancel()
        if isinstance(outcome, FocusError):
            logger.info("refused: %s", outcome)
            raise ToolError(str(outcome))
        if progress.stage != "done":  # a cache hit runs no step
            await progress("done")
        return _format(outcome, structured=structured)

    apps = Apps()
    apps.add_html_resource(
        VIEW_URI,
        app_html(),
        name="focus-result-view",
        title="FOCUS result view",
        description="The image with the ranked regions, the answer region, the relevance map, question, answer and "
        "status; click a region to zoom into it.",
    )

    @apps.tool(
        resource_uri=VIEW_URI,
        name="focus_zoom",
        title="Zoom into an image",
        description=f"{ZOOM_DESCRIPTION} {seen}",
        annotations=annotations,
        structured_output=structured,
    )
    async def focus_zoom(
        question: Question,
        ctx: Context[ServerState, Any],
        image_path: ImagePath = "",
        image_base64: ImageBase64 = "",
        region_id: RegionId = "",
        max_crops: MaxCrops = DEFAULT_CROPS,
    ) -> Annotated[CallToolResult, AgentResult]:
        return await serve(
            ctx,
            question=question,
            image_path=image_path,
            image_base64=image_base64,
            region_id=region_id,
            max_crops=max_crops,
        )

    @apps.tool(
        resource_uri=VIEW_URI,
        name="focus_find",
        title="Find an object in an image",
        description=f"{FIND_DESCRIPTION} {seen}",
        annotations=annotations,
        structured_output=structured,
    )
    async def focus_find(
        target: Target,
        ctx: Context[ServerState, Any],
        image_path: ImagePath = "",
        image_base64: ImageBase64 = "",
        region_id: RegionId = "",
        max_crops: MaxCrops = DEFAULT_CROPS,
    ) -> Annotated[CallToolResult, AgentResult]:
        return await serve(
            ctx,
            target=target,
            image_path=image_path,
            image_base64=image_base64,
            region_id=region_id,
            max_crops=max_crops,
        )

    # The Apps extension adds focus_zoom and focus_find (bound to the view) and the ui:// resource as it is applied.
    server: MCPServer[ServerState] = FocusMCPServer(
        "focus-tool",
        version=__version__,
        instructions="Zoom into small image details: focus_zoom answers a question, focus_find locates an object. "
        "Boxes are original-image pixels; chain calls with region_id.",
        lifespan=lifespan,
        log_level=settings.log_level,
        extensions=[apps],
    )

    @server.tool(title="Allowed image folders", description=ROOTS_DESCRIPTION, annotations=annotations)
    def focus_allowed_roots() -> dict[str, Any]:
        policy = settings.policy()
        return {
            "allowed_roots": [str(r) for r in policy.allowed_roots],
            "max_file_bytes": policy.max_file_bytes,
            "max_base64_bytes": policy.max_base64_bytes,
            "max_pixels": policy.max_pixels,
            "model": seen,
            "urls": (
                f"allowed as image_path: http(s) only, {'any' if policy.url_allow_private else 'public'} addresses, "
                f"at most {policy.max_base64_bytes:,} bytes, {policy.url_timeout_s:g} s in all (redirects included), "
                f"{policy.url_workers} downloads at once"
                if policy.allow_urls
                else "refused: pass an absolute path or image_base64"
            ),
        }

    return server

"""focus_zoom as a LangChain tool: the langchain-tests standard suites, the block format, errors, an agent loop."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from focus_tool.agent import AgentPolicy, AgentResult, FocusService
from focus_tool.langchain import FocusZoomTool, ZoomInput
from focus_tool.result import FocusResult
from tests.agent_support import QUESTION, TARGET, image_dir, tiny_pipeline

_SHARED: dict[str, Any] = {}


def _shared() -> dict[str, Any]:
    """The standard suites read properties, not fixtures: build the tiny pipeline and image once per process."""
    if not _SHARED:
        folder = Path(tempfile.mkdtemp(prefix="focus-lc-std-"))
        _SHARED["pipeline"] = tiny_pipeline(folder)
        _SHARED["images"] = image_dir(folder)
    return _SHARED


class _StandardParams:
    @property
    def tool_constructor(self) -> type[FocusZoomTool]:
        return FocusZoomTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        shared = _shared()
        return {"service": FocusService(shared["pipeline"], AgentPolicy(allowed_roots=(shared["images"],)))}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image_path": str(_shared()["images"] / "scene.png"), "question": QUESTION, "target": TARGET}


class TestFocusZoomToolUnit(_StandardParams, ToolsUnitTests):
    pass


class TestFocusZoomToolIntegration(_StandardParams, ToolsIntegrationTests):
    pass


def test_args_schema_is_flat_and_plain() -> None:
    schema = ZoomInput.model_json_schema()
    text = json.dumps(schema)
    for word in ("anyOf", "oneOf", "allOf", "$ref", "$defs"):
        assert word not in text
    assert {p["type"] for p in schema["properties"].values()} == {"string", "integer"}
    assert all(p.get("description") for p in schema["properties"].values())


def test_content_blocks_and_artifact(zoom_tool: FocusZoomTool, images: Path) -> None:
    args = {"image_path": str(images / "scene.png"), "question": QUESTION, "target": TARGET, "max_crops": 2}
    msg = zoom_tool.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": "c1"})
    assert isinstance(msg, ToolMessage) and msg.status == "success"
    kinds = [b["type"] for b in msg.content]
    assert kinds[0] == "text" and set(kinds[1:]) == {"image"} and 1 <= len(kinds) - 1 <= 2
    assert all(b["mime_type"] == "image/jpeg" and b["base64"] for b in msg.content[1:])
    summary = json.loads(msg.content[0]["text"])
    assert summary["image_size"] == [256, 192] and summary["regions"][0]["id"].endswith("-r1")
    assert isinstance(msg.artifact, AgentResult) and isinstance(msg.artifact, FocusResult)
    FocusResult.model_validate(msg.artifact.model_dump())


def test_no_images_when_switched_off(pipeline: Any, images: Path) -> None:
    tool = FocusZoomTool(service=FocusService(pipeline, AgentPolicy(allowed_roots=(images,))), return_images=False)
    msg = tool.invoke(
        {
            "type": "tool_call",
            "name": "focus_zoom",
            "args": {"image_path": str(images / "scene.png"), "target": TARGET},
            "id": "c1",
        }
    )
    assert [b["type"] for b in msg.content] == ["text"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"image_path": "scene.png", "question": QUESTION}, "must be an absolute path"),
        ({"image_path": "/etc/passwd", "question": QUESTION}, "outside the allowed folders"),
        ({"question": QUESTION}, "exactly one of image_path"),
        ({"image_path": "IMG", "question": QUESTION, "region_id": "r9"}, "region_id 'r9' is unknown"),
        ({"image_path": "IMG"}, "give a question"),
    ],
)
def test_expected_failures_are_tool_errors(
    zoom_tool: FocusZoomTool, images: Path, args: dict[str, Any], fragment: str
) -> None:
    args = {k: (str(images / "scene.png") if v == "IMG" else v) for k, v in args.items()}
    msg = zoom_tool.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": "bad"})
    assert msg.status == "error"
    assert fragment in msg.content


async def test_async_call_emits_progress_events(zoom_tool: FocusZoomTool, images: Path) -> None:
    args = {"image_path": str(images / "scene.png"), "target": TARGET}
    stages = [
        e["data"]["stage"]
        async for e in zoom_tool.astream_events(args, version="v2")
        if e["event"] == "on_custom_event" and e["name"] == "focus_progress"
    ]
    assert stages == ["running FOCUS", "targets", f"search {TARGET}", "regions", "done"]
    again = [
        e["data"]["stage"]
        async for e in zoom_tool.astream_events(args, version="v2")
        if e["event"] == "on_custom_event" and e["name"] == "focus_progress"
    ]
    assert again == ["running FOCUS", "done"]  # a cache hit: no model step


FIRST_REGION = "<the first region id of the last tool result>"


class ScriptedModel(GenericFakeChatModel):
    """A fake chat model whose replies (tool calls included) are scripted; tools binding is a no-op.

    A tool-call argument ``region_id=FIRST_REGION`` is replaced by the first region id of the last tool reply, as a
    model reading that reply would (region ids are fresh for every result).
    """

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        out = super()._generate(messages, *args, **kwargs)
        reply = out.generations[0].message
        replies = [m for m in messages if isinstance(m, ToolMessage) and m.status == "success"]
        if not isinstance(reply, AIMessage) or not replies:
            return out
        first = json.loads(replies[-1].content[0]["text"])["regions"][0]["id"]
        calls = [
            {**c, "args": {k: first if v == FIRST_REGION else v for k, v in c["args"].items()}}
            for c in reply.tool_calls
        ]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply.content, tool_calls=calls))])


def _call(args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "focus_zoom", "args": args, "id": call_id}])


def test_agent_zooms_then_zooms_inside_a_region_then_answers(zoom_tool: FocusZoomTool, images: Path) -> None:
    path = str(images / "scene.png")
    model = ScriptedModel(
        messages=iter(
            [
                _call({"image_path": path, "question": QUESTION, "target": TARGET}, "c1"),
                _call({"image_path": path, "question": QUESTION, "target": TARGET, "region_id": FIRST_REGION}, "c2"),
                _call({"image_path": "relative/scene.png", "question": QUESTION}, "c3"),
                _call({"image_path": path, "question": QUESTION, "max_crops": 99}, "c4"),
                AIMessage(content="The card is red."),
            ]
        )
    )
    agent = create_agent(model, tools=[zoom_tool])
    state = agent.invoke({"messages": [("user", "What colour is the card in " + path + "?")]})
    replies = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in replies] == ["success", "success", "error", "error"]
    first, second = replies[0].artifact, replies[1].artifact
    assert isinstance(first, AgentResult) and isinstance(second, AgentResult)
    top = json.loads(replies[0].content[0]["text"])["regions"][0]
    assert second.session.parent_region_id == top["id"]  # the zoom went into the region it was given
    assert second.session.parent_box == tuple(top["box"])
    assert not {r.id for r in second.regions} & {r.id for r in first.regions}  # sub-regions have ids of their own
    x0, y0, x1, y1 = second.session.parent_box or (0, 0, 0, 0)
    assert all(x0 <= r.box[0] and r.box[2] <= x1 and y0 <= r.box[1] and r.box[3] <= y1 for r in second.regions)
    assert "must be an absolute path" in replies[2].content
    assert "max_crops" in replies[3].content  # argument validation error, shown to the model
    assert state["messages"][-1].content == "The card is red."


def test_content_and_artifact_carry_every_field(zoom_tool: FocusZoomTool, images: Path) -> None:
    """The tool formats and never filters: the artifact is the whole AgentResult (the status block among its fields)
    and the text block has every key of the service's summary_json."""
    from focus_tool.agent import summary_json
    from tests.agent_support import ScriptedEngine

    args = {"image_path": str(images / "scene.png"), "question": QUESTION}
    msg = zoom_tool.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": "c1"})
    assert msg.status == "success" and isinstance(msg.artifact, AgentResult)
    assert set(msg.artifact.model_dump()) == set(AgentResult.model_fields)
    reference = FocusService(ScriptedEngine(), AgentPolicy(allowed_roots=(images,))).zoom(**args)
    assert set(json.loads(msg.content[0]["text"])) == set(json.loads(summary_json(reference)))


def test_a_tool_cannot_zoom_into_another_tools_region(pipeline: Any, images: Path) -> None:
    service = FocusService(pipeline, AgentPolicy(allowed_roots=(images,)))
    mine, theirs = FocusZoomTool(service=service), FocusZoomTool(service=service)
    args = {"image_path": str(images / "scene.png"), "target": TARGET}
    found = theirs.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": "c1"}).artifact
    rid = found.regions[0].id
    refused = mine.invoke({"type": "tool_call", "name": "focus_zoom", "args": {**args, "region_id": rid}, "id": "c2"})
    assert refused.status == "error" and "\n" not in refused.content
    assert f"region_id '{rid}' is unknown: it was not returned to this caller" in refused.content
    ok = theirs.invoke({"type": "tool_call", "name": "focus_zoom", "args": {**args, "region_id": rid}, "id": "c3"})
    assert ok.status == "success" and ok.artifact.session.parent_box == found.regions[0].box


def test_zooming_into_a_found_card_keeps_it_found_on_the_embedded_model(tmp_path: Path) -> None:
    """A region_id zoom into one card: its overlapping crops count as one object, not 'ambiguous'; two separate
    cards of one colour are still 'ambiguous' on the whole image."""
    from focus_tool.adapters.registry import load_adapter
    from focus_tool.data import synthetic as syn
    from focus_tool.pipeline import FocusPipeline
    from focus_tool.presets import config_for

    def card(x: float, y: float, color: str) -> syn.Card:
        return syn.Card(xyxy=(x, y, x + 60, y + 60), color=color, pip_color="white", n_pips=3)

    for name, colors in (("cards", ("orange", "purple", "green")), ("two_red", ("red", "red", "blue"))):
        cards = (card(150, 300, colors[0]), card(800, 350, colors[1]), card(480, 600, colors[2]))
        scene = syn.Scene(size_wh=(1024, 768), background=(128, 128, 128), cards=cards, noise_seed=3)
        syn.render(scene).save(tmp_path / f"{name}.png")
    adapter = load_adapter()
    service = FocusService(FocusPipeline(adapter, config_for(adapter)), AgentPolicy(allowed_roots=(tmp_path,)))
    tool = FocusZoomTool(service=service)

    def call(image: str, target: str, region_id: str = "") -> AgentResult:
        args = {"image_path": str(tmp_path / image), "target": target, "region_id": region_id}
        msg = tool.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": "c"})
        assert msg.status == "success", msg.content
        return msg.artifact

    two = call("two_red.png", "red card")
    assert (two.status.targets[0].state, two.status.targets[0].regions_above) == ("ambiguous", 2)
    found = call("cards.png", "purple card")
    assert found.status.targets[0].state == "found"
    best = next(r for r in found.regions if r.selected)
    inner = call("cards.png", "purple card", best.id)
    (status,) = inner.status.targets
    assert inner.session.parent_box == best.box
    assert sum((r.confidence or 0) >= status.threshold for r in inner.regions) >= 2  # several crops of the card...
    assert status.state == "found" and status.regions_above == 1  # ...count as one object
    assert "ambiguous" not in {w.code for w in inner.status.warnings}

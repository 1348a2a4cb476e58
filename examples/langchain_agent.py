"""A LangChain agent that calls focus_zoom, zooms again inside the best region, then answers (runs offline).

python examples/langchain_agent.py [--model PATH] [--out overlay.png]

The scene image lives in a temporary folder that is removed when the script ends; --out keeps the overlay.

The chat model here is a tiny scripted planner so the example runs without an API key; with a real model, pass
e.g. ``ChatAnthropic(model=...)`` to ``create_agent`` instead (providers that accept images in tool results see
the crops; the JSON text block alone is enough for the others).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from focus_tool.agent import AgentPolicy, FocusService
from focus_tool.data import synthetic as syn
from focus_tool.langchain import FocusZoomTool
from focus_tool.pipeline import FocusPipeline
from focus_tool.render import overlay


class OfflinePlanner(BaseChatModel):
    """Stands in for an LLM: zoom, zoom inside the best region, answer with what the tool said."""

    image_path: str
    question: str
    target: str

    @property
    def _llm_type(self) -> str:
        return "offline-planner"

    def bind_tools(self, tools: Any, **kwargs: Any) -> OfflinePlanner:  # type: ignore[override]
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        replies = [m for m in messages if isinstance(m, ToolMessage)]
        args = {"image_path": self.image_path, "question": self.question, "target": self.target}
        if not replies:
            msg = AIMessage(content="", tool_calls=[{"name": "focus_zoom", "args": args, "id": "call-1"}])
        else:
            summary = json.loads(replies[-1].content[0]["text"]) if replies[-1].status == "success" else {}
            regions = summary.get("regions", [])
            if len(replies) == 1 and regions:
                args["region_id"] = regions[0]["id"]
                msg = AIMessage(content="", tool_calls=[{"name": "focus_zoom", "args": args, "id": "call-2"}])
            else:
                msg = AIMessage(content=f"Answer: {summary.get('answer')}")
        return ChatResult(generations=[ChatGeneration(message=msg)])


def run(model: str | None, folder: Path, out: Path) -> None:
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 7]), "attribute")
    image_path = folder / "scene.png"
    syn.render(item.scene).save(image_path)

    pipeline = FocusPipeline.from_pretrained(model)
    tool = FocusZoomTool(service=FocusService(pipeline, AgentPolicy(allowed_roots=(folder,))))
    planner = OfflinePlanner(image_path=str(image_path), question=item.question.text, target=item.question.targets[0])
    agent = create_agent(planner, tools=[tool])

    state = agent.invoke({"messages": [("user", f"{item.question.text} The image is {image_path}.")]})
    for m in state["messages"]:
        if isinstance(m, ToolMessage):
            result = m.artifact
            kinds = [b["type"] for b in m.content]
            print(
                f"tool {m.status}: blocks {kinds}; zoomed into {result.session.parent_region_id}; "
                f"forward passes {result.forward_passes.model_dump()}; cache hit {result.session.cache_hit}"
            )
        elif isinstance(m, AIMessage) and m.content:
            print("agent:", m.content)
    last = next(m.artifact for m in reversed(state["messages"]) if isinstance(m, ToolMessage))
    overlay(syn.render(item.scene), last).save(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--out", type=Path, default=None, help="overlay PNG of the last zoom to keep (default: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="focus-agent-") as tmp:  # the scene image (and overlay) live here
        folder = Path(tmp)
        run(args.model, folder, args.out or folder / "overlay.png")
    print("overlay written to", args.out or "a temporary folder, now removed (--out PATH keeps it)")


if __name__ == "__main__":
    main()

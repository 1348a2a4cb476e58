"""Start the MCP server as a stdio subprocess (what a desktop host does) and call its tools with the SDK client.

python examples/mcp_client.py [--model PATH] [--out overlay.png]

The scene image lives in a temporary folder that is removed when the script ends; --out keeps the overlay.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import anyio
import numpy as np
from mcp import Client, StdioServerParameters
from mcp.types import ImageContent, TextContent

from focus_tool.agent import AgentResult
from focus_tool.data import synthetic as syn
from focus_tool.render import overlay


async def run(model: str | None, folder: Path, out: Path) -> None:
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 7]), "attribute")
    image = syn.render(item.scene)
    image.save(folder / "scene.png")

    server_args = ["-m", "mcp_server", "--allowed-root", str(folder), "--log-level", "WARNING"]
    if model:
        server_args += ["--model", model]
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    params = StdioServerParameters(command=sys.executable, args=server_args, env=env)

    async with Client(params) as client:
        print("tools:", [t.name for t in (await client.list_tools()).tools])
        path = str(folder / "scene.png")
        found = await client.call_tool("focus_find", {"image_path": path, "target": item.question.targets[0]})
        first = AgentResult.model_validate(found.structured_content)
        print("focus_find:", [(r.id, r.box, r.confidence) for r in first.regions[:3]])
        zoom_args = {"image_path": path, "question": item.question.text, "region_id": first.regions[0].id}
        zoomed = await client.call_tool("focus_zoom", zoom_args)
        text = next(b.text for b in zoomed.content if isinstance(b, TextContent))
        n_images = sum(isinstance(b, ImageContent) for b in zoomed.content)
        summary = json.loads(text)
        print("focus_zoom inside", first.regions[0].id, "->", summary["answer"], f"({n_images} crop images)")
        print("forward passes:", summary["forward_passes"], "session:", summary["session"])
        bad = await client.call_tool("focus_zoom", {"image_path": "/etc/passwd", "question": "what is this?"})
        print("refused:", bad.is_error, next(b.text for b in bad.content if isinstance(b, TextContent)))
    overlay(image, AgentResult.model_validate(zoomed.structured_content)).save(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--out", type=Path, default=None, help="overlay PNG of the zoomed result to keep (default: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="focus-mcp-") as tmp:  # the scene image (and overlay) live here
        folder = Path(tmp)
        anyio.run(run, args.model, folder, args.out or folder / "overlay.png")
    print("overlay written to", args.out or "a temporary folder, now removed (--out PATH keeps it)")


if __name__ == "__main__":
    main()

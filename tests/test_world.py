"""A closed world, declared and kept: the embedded model refuses what it cannot know, the same way everywhere.

The words under test are not a hand-kept list: they are the words of the embedded model's tokenizer outside its
declared world (``focus_world.json``), i.e. the words it knows only from the in-context extraction prompt (car,
sign, bus, bicycle, dogs, door, glove, ...). Each is asked as a question and searched as a target on an image with
no card, through Python, the CLI, LangChain and MCP over stdio: every surface refuses it with one line (Python:
``OutsideWorld``; CLI: exit 2; LangChain: an error tool message; MCP: ``is_error``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent
from PIL import Image, ImageDraw

from focus_tool.agent import AgentPolicy, FocusService
from focus_tool.cli import main
from focus_tool.data import synthetic as syn
from focus_tool.embedded.world import declare
from focus_tool.errors import InputRejected
from focus_tool.langchain import FocusZoomTool
from focus_tool.pipeline import FocusPipeline
from focus_tool.world import WORLD_FILE, OutsideWorld, QuestionForm, World, read_world

REPO = Path(__file__).resolve().parent.parent
EMBEDDED = REPO / "focus_tool" / "embedded" / "model"
PROMPT_EXAMPLES = ("car", "sign", "bus", "bicycle", "dogs", "door", "glove")


@pytest.fixture(scope="module")
def pipe() -> FocusPipeline:
    return FocusPipeline.from_pretrained(None)


def prompt_only_words(pipe: FocusPipeline) -> list[str]:
    """The tokenizer's words that the declared world does not hold (lower case, sorted)."""
    assert pipe.world is not None
    return sorted({w.lower() for w in pipe.adapter.vocabulary()} - pipe.world.words)


def _cases(pipe: FocusPipeline) -> list[tuple[str, str]]:
    """(kind, text): per word a question of the world's own shape about it, and the word as a target."""
    cases: list[tuple[str, str]] = []
    for w in prompt_only_words(pipe):
        cases += [("question", f"What is the color of the dots on the {w}?"), ("target", w)]
    return cases


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo-like image with no card: grey noise, a red rectangle and a grey one."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(80, 170, (600, 800, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 100, 300, 200), fill=(200, 30, 30))
    draw.rectangle((500, 300, 700, 500), fill=(128, 128, 128))
    folder = tmp_path_factory.mktemp("world-photo")
    image.save(folder / "photo.png")
    return folder


def test_the_shipped_world_is_the_one_the_training_data_declares() -> None:
    assert read_world(EMBEDDED) == declare()
    assert (EMBEDDED / WORLD_FILE).read_text(encoding="utf-8") == declare().to_json()


def test_the_words_under_test_are_the_prompt_only_ones(pipe: FocusPipeline) -> None:
    words = prompt_only_words(pipe)
    assert set(PROMPT_EXAMPLES) <= set(words) and len(words) >= 17, words
    assert not {"card", "red", "dots", "white", "left"} & set(words)


def test_python_refuses_every_case_in_one_line(pipe: FocusPipeline, photo: Path) -> None:
    before = dict(pipe.adapter.counter.counts)
    with Image.open(photo / "photo.png") as image:
        for kind, text in _cases(pipe):
            with pytest.raises(OutsideWorld) as e:
                pipe.zoom(image, **{kind: text})  # type: ignore[arg-type]
            assert "\n" not in str(e.value) and "outside what this model knows" in str(e.value)
            assert "Ask one of: 'What is the color of the dots on the red card?'" in str(e.value)
    assert pipe.adapter.counter.counts == before  # refused before any model call


def test_cli_refuses_every_case_with_exit_2(
    pipe: FocusPipeline, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind, text in _cases(pipe):
        code = main(["zoom", str(photo / "photo.png"), f"--{kind}", text])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and err.startswith("focus: error: the "), (text, err)
        assert "outside what this model knows" in err


def test_langchain_refuses_every_case_as_an_error(pipe: FocusPipeline, photo: Path) -> None:
    tool = FocusZoomTool(service=FocusService(pipe, AgentPolicy(allowed_roots=(photo,))))
    for i, (kind, text) in enumerate(_cases(pipe)):
        args = {"image_path": str(photo / "photo.png"), kind: text}
        msg = tool.invoke({"type": "tool_call", "name": "focus_zoom", "args": args, "id": f"c{i}"})
        assert msg.status == "error" and "outside what this model knows" in msg.content, (text, msg.content)


@pytest.mark.slow
@pytest.mark.anyio
async def test_mcp_stdio_refuses_every_case_as_is_error(pipe: FocusPipeline, photo: Path, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": os.environ["PATH"]}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", "--allowed-root", str(photo)], env=env, cwd=str(tmp_path)
    )
    refused = []
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            for kind, text in _cases(pipe):
                tool = "focus_zoom" if kind == "question" else "focus_find"
                out = await client.call_tool(tool, {"image_path": str(photo / "photo.png"), kind: text})
                assert isinstance(out.content[0], TextContent)
                refused.append(out.is_error and "outside what this model knows" in out.content[0].text)
            ok = await client.call_tool(
                "focus_zoom", {"image_path": str(photo / "photo.png"), "question": "is there a RED card in the image"}
            )
    assert all(refused), (tmp_path / "stderr.log").read_text()[-2000:]
    assert not ok.is_error and isinstance(ok.content[0], TextContent)
    assert json.loads(ok.content[0].text)["question"] == "Is there a red card in the image?"


@pytest.mark.parametrize("text", ["\u200b", "???", " - ", "\u200b\u200b?"])
def test_a_question_of_no_words_is_refused(pipe: FocusPipeline, text: str) -> None:
    with pytest.raises(InputRejected, match="has no words"):
        pipe.zoom(Image.new("RGB", (64, 64)), question=text)


def test_lower_case_in_world_questions_are_answered_like_their_capitalised_form(pipe: FocusPipeline) -> None:
    item = syn.benchmark_items(0, 4)[0]
    image = syn.render(item.scene)
    options = list(item.question.options)
    upper = pipe.zoom(image, question=item.question.text, options=options)
    lower = pipe.zoom(image, question="  " + item.question.text.lower().rstrip("?") + "  ", options=options)
    assert lower.question == upper.question == item.question.text
    assert lower.answer == upper.answer and lower.answer_evidence == upper.answer_evidence
    assert [r.box for r in lower.regions] == [r.box for r in upper.regions]
    found = pipe.zoom(image, target=item.question.targets[0].upper())
    assert found.targets == [item.question.targets[0]]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["A horse", "the sky"], "option 'A horse' is outside"),
        (["white", "left"], "option 'left' is outside"),  # an answer of another form
        ("white|black", "options must be a list of strings"),
        (["white", "white"], "repeat one another"),
    ],
)
def test_options_outside_the_question_form_are_refused(pipe: FocusPipeline, options: object, fragment: str) -> None:
    with pytest.raises(InputRejected, match=fragment):
        pipe.zoom(
            Image.new("RGB", (64, 64)),
            question="What is the color of the dots on the red card?",
            options=options,  # type: ignore[arg-type]
        )


def test_an_open_world_model_keeps_the_tokenizer_check(pipe: FocusPipeline) -> None:
    open_pipe = FocusPipeline(pipe.adapter, pipe.config, world=None)
    with pytest.raises(OutsideWorld, match="vocabulary has no word 'zebra'"):
        open_pipe.zoom(Image.new("RGB", (64, 64)), question="What is the color of the zebra?")
    with pytest.raises(OutsideWorld, match="'zebra'"):
        open_pipe.zoom(Image.new("RGB", (64, 64)), target="zebra card")


def test_world_declarations_round_trip_and_refuse_malformed_files(tmp_path: Path) -> None:
    world = World("a test world.", ("blue ball",), (QuestionForm("Where is the {object}?", ("up", "down")),))
    assert World.from_json(world.to_json()) == world
    assert world.check_question("where is THE blue ball") == ("Where is the blue ball?", world.forms[0])
    assert world.example() == "Where is the blue ball?"
    for bad in ("[]", '{"summary": "x"}', '{"summary": "x", "objects": [], "forms": []}', "{"):
        with pytest.raises(ValueError, match="world"):
            World.from_json(bad)
    assert read_world(tmp_path) is None

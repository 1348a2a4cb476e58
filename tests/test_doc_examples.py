"""Every command and code example in the docs, the ``--help`` texts and the tool descriptions works as written.

Where examples come from:

- README.md and docs/**/*.md: fenced ``bash`` / ``sh`` / ``console`` / ``python`` / ``json`` blocks (a shell block
  is one command per line, ``\\``-continued lines joined, ``$`` prompts and comment lines dropped), and the inline
  code spans that start with ``focus``;
- ``focus --help`` and every subcommand's ``--help``: the epilog's example lines and the backticked spans of the
  descriptions and flag helps that start with a program (a ``focus COMMAND`` outside backticks fails
  :func:`test_help_texts_quote_their_commands`, so none is missed);
- the MCP and LangChain tool descriptions: every ``e.g. '...'`` value, run through the agent engine as the argument
  it illustrates (a region id is issued per call, so a region-id example must look like the id a first call returns,
  and that id is used).

How each is classified (:func:`classify`, first rule that matches; the reasons are in the test ids):

- **parse only** (``PARSE_ONLY``): it names a hub model (``--model org/name`` that is not a local path,
  ``from_pretrained("org/...")``: a download) or a GPU (``cuda``); it trains (``focus train-embedded``, ~80 min); it
  is ``./run.sh test`` (this suite) or a contributor's check from the checkout's ``.venv`` (ruff, mypy, pytest,
  ``duplicates``); it serves (``focus serve``, ``focus-mcp``, ``python -m mcp_server``, a host's JSON config: it
  blocks until stopped, and ``tests/server/`` starts the same server and calls it); it needs what the repository
  does not hold (a benchmark ``--data`` folder, Node.js for ``npx``, PyPI for ``pip install``, a chat model with an
  API key). ``focus`` commands are parsed by ``focus_tool.cli.build_parser()``, ``focus-mcp`` and
  ``python -m mcp_server`` by the same flags (``focus serve``), other shell by ``bash -n`` (``<name>`` read as a
  word), Python by ``compile()``, JSON by ``json.loads`` (and a ``focus-mcp`` server's ``args`` by the parser);
- **synopsis**: a usage form, not an example (``...``, ``[optional]``, ``<name>``, an ALL-CAPS placeholder such as
  ``QUESTION`` or ``N``), or a bare mention in prose (``focus eval``, ``focus zoom --model``): its command and every
  ``--flag`` it names must exist;
- **run**: everything else, on the default (embedded) model; the same command documented in several places runs once.

Substitutions before a run (``IMAGES``, :func:`substitute`, :func:`run_argv`): ``path/to/image.png``, ``photo.jpg``,
``img.png``, ``IMG`` and ``IMAGE`` are demo images written in a temporary folder (an in-world scene with a red and a
blue card); a path under ``/tmp/`` moves into the test's temporary folder; to keep the suite short, ``--limit N`` and
``--n N`` become 2 and a demo gets ``--tally 1``.

Each run happens in a fresh copy of the checkout (tracked and unignored files), with that copy as the current
folder, so the docs' relative paths (``./run.sh``, ``benchmarks/...``, ``focus_tool/embedded/model``) resolve and what
a command writes lands in the copy (``./run.sh`` uses this environment through ``FOCUS_VENV``). It must exit 0 and
print no "error", "refused" or "Traceback", and ``git status --porcelain`` of the checkout must stay empty (in a
checkout with uncommitted work, whose files may change meanwhile, it must gain no untracked file).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from focus_tool.cli import EPILOG, build_parser

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
pytestmark = pytest.mark.slow

FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
SHELL_LANGS = ("bash", "sh", "console", "shell")
FOCUS_PROGRAMS = ("focus", "focus-mcp", "python", "torchrun", "pip", "./run.sh", "npx")
BAD_OUTPUT = re.compile(r"\b(error|refused|traceback)\b", re.I)
IN_WORLD_QUESTION = "What is the color of the dots on the red card?"

# Placeholder image names of the docs -> the file written for them (an in-world scene, see `images`).
IMAGES = {
    "path/to/image.png": "image.png",
    "photo.jpg": "photo.jpg",
    "img.png": "img.png",
    "IMG": "image.png",
    "IMAGE": "image.png",
}
IMAGE_WORD = re.compile(r"(?<![\w/.~-])(path/to/image\.png|photo\.jpg|img\.png|IMG|IMAGE)(?![\w/.-])")
PLACEHOLDER = re.compile(r"\.\.\.|\[|<[\w ]+>|(?<![\w/.-])[A-Z][A-Z_]*(?:\.[A-Z_]+)?(?:=[A-Z_]+)?(?![\w/.-])")
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")

# (pattern searched in the command or code without comments, reason): the first match makes an example parse-only.
PARSE_ONLY: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^\./run\.sh test\b"), "the whole test suite, which this test is part of"),
    (re.compile(r"\bfrom_pretrained\(\s*[\"'][\w.-]+/[\w.-]+[\"']"), "names a hub model (a download)"),
    (re.compile(r"--device[ =]cuda|[\"']cuda[\"']"), "needs a GPU"),
    (re.compile(r"\bfocus train-embedded\b"), "trains the embedded model (about 80 min)"),
    (re.compile(r"^npx\b"), "needs Node.js and the npm registry"),
    (re.compile(r"\bfocus serve\b|\bfocus-mcp\b|-m mcp_server\b"), "serves until stopped (tests/server/ run it)"),
    (re.compile(r"^(HF_HUB_OFFLINE=1 )?\.venv/bin/|^duplicates\b"), "a contributor's check (./run.sh test runs them)"),
    (re.compile(r"\bpip install\b"), "installs from PyPI"),
    (re.compile(r"--data[ =]"), "reads a benchmark data set that is not in the repository"),
    (re.compile(r"\bcreate_agent\(model\b"), "needs a tool-calling chat model and its API key"),
]


@dataclass(frozen=True)
class Example:
    """One command or code example and where it was found."""

    where: str  # "README.md:47", "focus --help", "mcp_server/server.py Target"
    lang: str  # "shell", "python", "json" or "tool"
    text: str
    arg: str = ""  # tool examples: the argument the value illustrates


# ---------------------------------------------------------------------------------------------------- collection


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def shell_commands(block: str) -> list[tuple[int, str]]:
    """(line offset in the block, command) for each command of a shell block."""
    out: list[tuple[int, str]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        start, line = i, lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        line = line.removeprefix("$ ")
        if line and not line.startswith("#"):
            out.append((start, line))
    return out


def doc_examples() -> Iterator[Example]:
    """Fenced blocks and inline ``focus`` spans of README.md and docs/**/*.md."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        name = str(doc.relative_to(REPO))
        for m in FENCE.finditer(text):
            lang, body, first = m.group(1).lower(), m.group(2), _line(text, m.start(2))
            if lang in SHELL_LANGS:
                for offset, cmd in shell_commands(body):
                    yield Example(f"{name}:{first + offset}", "shell", cmd)
            elif lang in ("python", "json"):
                yield Example(f"{name}:{first}", lang, body)
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for m in INLINE.finditer(prose):
            span = re.sub(r"\s*\n\s*", " ", m.group(1)).replace("\\|", "|").strip()
            if re.match(r"focus(-mcp)?\s", span):
                yield Example(f"{name}:{_line(prose, m.start())}", "shell", span)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def help_texts() -> Iterator[tuple[str, str]]:
    """(where, text) for the description, epilog and flag helps of ``focus`` and each subcommand."""
    parser = build_parser()
    for where, p in [("focus --help", parser), *((f"focus {n} --help", s) for n, s in _subparsers(parser).items())]:
        for text in (p.description, p.epilog, *(a.help for a in p._actions)):
            if text:
                yield where, text


def help_examples() -> Iterator[Example]:
    """The epilog's example lines and the backticked commands of every help text."""
    for line in EPILOG.splitlines():
        if line.startswith("  focus"):
            yield Example("focus --help (examples)", "shell", re.split(r"\s{3,}", line.strip())[0])
    for where, text in help_texts():
        for span in INLINE.findall(text):
            if span.split()[0] in FOCUS_PROGRAMS:
                yield Example(where, "shell", span)


def _field_description(annotated: Any) -> str:
    from pydantic.fields import FieldInfo

    return next(m.description for m in annotated.__metadata__ if isinstance(m, FieldInfo)) or ""


def tool_texts() -> Iterator[tuple[str, str, str]]:
    """(where, text, the argument its examples illustrate) for every tool description and argument description."""
    from focus_tool import langchain as lc
    from mcp_server import server

    yield "mcp_server/server.py ZOOM_DESCRIPTION", server.ZOOM_DESCRIPTION, "question"
    yield "mcp_server/server.py FIND_DESCRIPTION", server.FIND_DESCRIPTION, "target"
    yield "mcp_server/server.py ROOTS_DESCRIPTION", server.ROOTS_DESCRIPTION, ""
    for name, arg in [
        ("ImagePath", "image_path"),
        ("ImageBase64", "image_base64"),
        ("RegionId", "region_id"),
        ("MaxCrops", "max_crops"),
        ("Question", "question"),
        ("Target", "target"),
    ]:
        yield f"mcp_server/server.py {name}", _field_description(getattr(server, name)), arg
    yield "focus_tool/langchain.py ZOOM_DESCRIPTION", lc.ZOOM_DESCRIPTION, "question"
    for name, info in lc.ZoomInput.model_fields.items():
        yield f"focus_tool/langchain.py ZoomInput.{name}", info.description or "", name


def tool_examples() -> Iterator[Example]:
    """Every ``e.g. '...'`` value of the tool descriptions."""
    for where, text, arg in tool_texts():
        for group in re.findall(r"e\.g\.\s*((?:'[^']*'(?:\s*(?:,|or)\s*)?)+)", text):
            for value in re.findall(r"'([^']*)'", group):
                yield Example(where, "tool", value, arg)


def all_examples() -> list[Example]:
    return [*doc_examples(), *help_examples(), *tool_examples()]


# ------------------------------------------------------------------------------------------------ classification


def _code(example: Example) -> str:
    """The example without comments (a comment may name a hub model or a GPU as an alternative)."""
    if example.lang == "python":
        lines = example.text.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(example.text).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                lines[row - 1] = lines[row - 1][:col].rstrip()
        return "\n".join(lines)
    if example.lang == "shell":
        try:
            return shlex.join(shlex.split(example.text, comments=True))
        except ValueError:
            return example.text
    return example.text


def _names_hub_model(code: str) -> bool:
    for model in re.findall(r"--model[ =](\S+)", code):
        local = model.startswith(("/", ".", "~", "$")) or (REPO / model).exists()
        if "/" in model and not local:
            return True
    return False


def _focus_argv(code: str) -> list[str] | None:
    """The ``focus`` arguments of a command run through ``focus`` (or parsed as ``focus serve``), else None."""
    try:
        words = shlex.split(code)
    except ValueError:
        return None
    if words[:1] == ["focus"]:
        return words[1:]
    if words[:1] == ["focus-mcp"]:
        return ["serve", *words[1:]]
    if words[:3] == ["python", "-m", "mcp_server"]:
        return ["serve", *words[3:]]
    return None


def _is_mention(argv: list[str]) -> bool:
    """A command named in prose: a subcommand and flag names without values that argparse rejects."""
    if not all(a in _subparsers(build_parser()) or a.startswith("-") for a in argv):
        return False
    return _parse_error(argv) is not None


def _parse_error(argv: list[str]) -> str | None:
    """Why ``focus ARGV`` does not parse, or None (``--help`` and ``--version`` parse: they exit 0)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as e:
        return None if e.code == 0 else err.getvalue().strip() or f"exit {e.code}"
    return None


def classify(example: Example) -> tuple[str, str]:
    """("run" | "parse" | "synopsis", reason)."""
    if example.lang == "tool":
        return "run", f"as the {example.arg} argument of the tool"
    if example.lang == "json":
        return "parse", "a host's configuration: starts the MCP server"
    code = _code(example)
    if _names_hub_model(code):
        return "parse", "names a hub model (a download)"
    for pattern, reason in PARSE_ONLY:
        if pattern.search(code):
            return "parse", reason
    if example.lang == "shell":
        if PLACEHOLDER.search(IMAGE_WORD.sub("x", code)):
            return "synopsis", "a usage form with placeholders"
        argv = _focus_argv(code)
        if argv is not None and _is_mention(argv):
            return "synopsis", "a command named in prose"
    return "run", "on the default model"


EXAMPLES = all_examples()
CLASSIFIED = [(e, *classify(e)) for e in EXAMPLES]


def _id(example: Example) -> str:
    text = re.sub(r"\s+", " ", example.text)
    return f"{example.where} {text[:70]}"


# ------------------------------------------------------------------------------------------------------ checks


def test_examples_are_found() -> None:
    """The collector sees every source: a regex that stops matching would otherwise pass silently."""
    wheres = {e.where.split(":")[0] for e in EXAMPLES}
    for source in ("README.md", "docs/agents.md", "docs/evaluation.md", "docs/method.md", "focus --help (examples)"):
        assert source in wheres, f"no example found in {source}"
    assert any(e.lang == "tool" and e.arg == "question" for e in EXAMPLES)
    assert any(e.lang == "tool" and e.arg == "target" for e in EXAMPLES)
    assert sum(mode == "run" for _, mode, _ in CLASSIFIED) >= 10


def test_help_texts_quote_their_commands() -> None:
    """A command in a help text is in backticks (or an epilog example line), so this module finds it."""
    loose = re.compile(r"\bfocus (?:-\S+ )*(?:zoom|models|demo|eval|serve|train-embedded)\b")
    for where, text in help_texts():
        if text == EPILOG:
            continue
        found = loose.findall(INLINE.sub("", text))
        assert not found, f"{where}: write {found} in backticks"


@pytest.mark.parametrize("example", [e for e, mode, _ in CLASSIFIED if mode == "synopsis"], ids=_id)
def test_synopsis_names_real_commands_and_flags(example: Example) -> None:
    words = IMAGE_WORD.sub("x", example.text).replace("[", " ").replace("]", " ").split()
    parser = build_parser()
    subs = _subparsers(parser)
    if words[0] == "focus":
        start = 1
    elif "focus_tool.cli" in words:  # torchrun ... -m focus_tool.cli COMMAND
        start = words.index("focus_tool.cli") + 1
    else:
        assert subprocess.run(["bash", "-n", "-c", re.sub(r"<[\w ]+>", "X", example.text)]).returncode == 0
        return
    command = next((w for w in words[start:] if w in subs), None)
    at = words.index(command) if command is not None else len(words)
    before = FLAG.findall(" ".join(words[start:at]))
    top = {s for a in parser._actions for s in a.option_strings}
    assert not set(before) - top, f"{example.where}: focus has no {sorted(set(before) - top)}"
    if command is not None:
        flags = FLAG.findall(" ".join(words[at + 1 :]))
        known = {s for a in subs[command]._actions for s in a.option_strings}
        assert not set(flags) - known, f"{example.where}: focus {command} has no {sorted(set(flags) - known)}"


def _parse_json(example: Example) -> None:
    config = json.loads(example.text)
    for name, server in config.get("mcpServers", {}).items():
        assert Path(server["command"]).name == "focus-mcp", f"{example.where}: server {name} is not focus-mcp"
        assert _parse_error(["serve", *server["args"]]) is None, f"{example.where}: {server['args']}"


@pytest.mark.parametrize(
    ("example", "reason"),
    [(e, r) for e, mode, r in CLASSIFIED if mode == "parse"],
    ids=lambda v: _id(v) if isinstance(v, Example) else v,
)
def test_parse_only_examples_parse(example: Example, reason: str) -> None:
    if example.lang == "json":
        _parse_json(example)
    elif example.lang == "python":
        compile(example.text, example.where, "exec")
    else:
        argv = _focus_argv(_code(example))
        if argv is not None:
            error = _parse_error(argv)
            assert error is None, f"{example.where}: {example.text!r} does not parse: {error}"
        else:
            text = re.sub(r"<[\w ]+>", "X", example.text)  # <family>, <your files>: a name of the reader's
            proc = subprocess.run(["bash", "-n", "-c", text], capture_output=True, text=True)
            assert proc.returncode == 0, f"{example.where}: {proc.stderr}"


# ----------------------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The images that stand for the docs' placeholders: an in-world demo scene with a red and a blue card."""
    from focus_tool.data import synthetic as syn

    folder = tmp_path_factory.mktemp("doc-images")
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 15]), "attribute")
    assert {"red", "blue"} <= {c.color for c in item.scene.cards}
    scene = syn.render(item.scene)
    for name in set(IMAGES.values()):
        scene.save(folder / name, quality=95)
    return folder


@pytest.fixture
def git_status() -> set[str]:
    """The checkout's status before one run (per test: other work in the checkout may change it meanwhile)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    return _status()


def _status() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=60)
    return set(out.stdout.splitlines())


def substitute(text: str, images: Path, tmp: Path) -> str:
    """The documented substitutions: placeholder images, /tmp/ paths, smaller sizes (the demo tally: `run_argv`)."""
    text = re.sub(r"(?<![\w/])/tmp/", f"{tmp}/", text)  # first: the images may live under /tmp themselves
    text = IMAGE_WORD.sub(lambda m: str(images / IMAGES[m.group(1)]), text)
    text = re.sub(r"(--limit|--n)([ =])\d+", r"\g<1>\g<2>2", text)
    return text


def checkout_copy(dest: Path) -> Path:
    """A copy of the checkout's tracked and unignored files (what a clone has, plus work in progress)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)  # mtimes kept: run.sh compares pyproject.toml with .venv's stamp
    return dest


def run_argv(example: Example, images: Path, tmp: Path) -> list[str]:
    if example.lang == "python":
        return [sys.executable, "-c", substitute(example.text, images, tmp)]
    argv = shlex.split(substitute(example.text, images, tmp), comments=True)
    if argv[:2] in (["focus", "demo"], ["./run.sh", "demo"]) and "--tally" not in argv:
        argv += ["--tally", "1"]
    return argv


def _unique_runs() -> list[tuple[Example, str]]:
    """One run per distinct command or code (the same command is documented in several places)."""
    seen: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], Example] = {}
    for e, mode, _ in CLASSIFIED:
        if mode == "run" and e.lang != "tool":
            key = (e.lang, IMAGE_WORD.sub("IMAGE", _code(e)))  # one run for the same command on another image name
            seen.setdefault(key, []).append(e.where)
            first.setdefault(key, e)
    return [(first[k], ", ".join(w)) for k, w in seen.items()]


@pytest.mark.parametrize(("example", "places"), _unique_runs(), ids=lambda v: _id(v) if isinstance(v, Example) else "")
def test_runnable_example_runs(
    example: Example, places: str, images: Path, git_status: set[str], tmp_path: Path
) -> None:
    checkout = checkout_copy(tmp_path / "checkout")
    if example.text.startswith("./run.sh"):
        stamp = Path(sys.prefix) / ".focus-installed"
        if not stamp.is_file() or (REPO / "pyproject.toml").stat().st_mtime > stamp.stat().st_mtime:
            pytest.skip("run.sh would reinstall the environment (.venv is older than pyproject.toml)")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "FOCUS_VENV": sys.prefix,  # run.sh uses this environment instead of creating one in the copy
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
    }
    argv = run_argv(example, images, tmp_path)
    proc = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{places}: {shlex.join(argv)} exited {proc.returncode}:\n{output[-3000:]}"
    bad = BAD_OUTPUT.findall(output)
    assert not bad, f"{places}: {shlex.join(argv)} printed {bad}:\n{output[-3000:]}"
    new = _status() - git_status
    if git_status:  # work in progress in the checkout (edits may land meanwhile): new untracked files only
        new = {line for line in new if line.startswith("??")}
    assert not new, f"{places} changed the checkout: {sorted(new)}"


@pytest.fixture(scope="module")
def service(images: Path) -> Any:
    from focus_tool.agent import AgentPolicy, FocusService
    from focus_tool.pipeline import FocusPipeline

    return FocusService(FocusPipeline.from_pretrained(), AgentPolicy(allowed_roots=(images,)))


@pytest.mark.parametrize(
    "example", [e for e, mode, _ in CLASSIFIED if e.lang == "tool"], ids=lambda e: f"{e.where} {e.arg}={e.text!r}"
)
def test_tool_description_example_runs(example: Example, service: Any, images: Path) -> None:
    """The value, passed as its argument on an in-world image, is answered (not refused, not an error)."""
    from focus_tool.agent import summary_json

    args: dict[str, Any] = {"image_path": str(images / "image.png")}
    if example.arg == "region_id":  # ids are issued per call: the example must look like the id a call returns
        args |= {"question": IN_WORLD_QUESTION}
        issued = service.zoom(**args).result.regions[0].id
        assert re.sub(r"\d+", "N", example.text) in re.sub(r"\d+", "N", issued), f"ids look like {issued!r}"
        args["region_id"] = issued
    elif example.arg in ("question", "target"):
        args[example.arg] = example.text
    else:
        pytest.fail(f"{example.where}: no way to run an example of {example.arg}; add one here")
    outcome = service.zoom(**args)
    status = outcome.result.status
    assert status is None or status.question != "refused", summary_json(outcome)
    assert not BAD_OUTPUT.findall(summary_json(outcome)), summary_json(outcome)

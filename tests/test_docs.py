"""User documentation and packaging: links stay inside the repository, the README's two commands, LICENSE,
``focus --version``, the global quiet flag, and the demo's default output folder being ignored by git."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from focus_tool.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
CARD = REPO / "focus_tool" / "embedded" / "model" / "MODEL_CARD.md"
DOCS = sorted([REPO / "README.md", REPO / "CHANGELOG.md", CARD, *(REPO / "docs").rglob("*.md")])
USER_DOCS = [
    REPO / "README.md",
    REPO / "CHANGELOG.md",
    CARD,
    REPO / "docs" / "method.md",
    REPO / "docs" / "evaluation.md",
]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
AUTOLINK = re.compile(r"<((?:https?|ftp|file)://[^>\s]+)>")


def _prose(text: str) -> str:
    """The markdown outside fenced code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    """Every link target of a markdown file: inline links and images, reference definitions, autolinks."""
    prose = _prose(path.read_text(encoding="utf-8"))
    return [*LINK.findall(prose), *REF_DEF.findall(prose), *AUTOLINK.findall(prose)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a markdown file (GitHub numbers repeated headings -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def link_problem(source: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``source``) does not resolve inside the repository, or None if it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        scheme = target.split(":", 1)[0].lower()
        return None if scheme in ("http", "https", "mailto") else f"{scheme}: link"
    path_part, _, anchor = target.partition("#")
    if path_part.startswith("/"):
        return "absolute path (use a path relative to the file)"
    dest = (source.parent / path_part).resolve() if path_part else source.resolve()
    if not dest.is_relative_to(REPO):
        return "leaves the repository"
    if not dest.exists():
        return "no such file"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading #{anchor} in {dest.relative_to(REPO)}"
    return None


def test_the_link_checker_can_fail(tmp_path: Path) -> None:
    """The checker itself: each kind of broken link is caught, and good ones pass."""
    assert link_problem(REPO / "README.md", "../elsewhere/notes.md") == "leaves the repository"
    assert link_problem(REPO / "README.md", "docs/nope.md") == "no such file"
    assert link_problem(REPO / "README.md", "/etc/passwd") is not None
    assert link_problem(REPO / "README.md", "file:///etc/passwd") is not None
    assert link_problem(REPO / "README.md", "docs/method.md#no-such-heading") is not None
    assert link_problem(REPO / "README.md", "docs/method.md") is None
    assert link_problem(REPO / "README.md", "https://arxiv.org/abs/2506.21710") is None
    doc = tmp_path / "x.md"
    doc.write_text("see [a](b.md), ![img](c.png) and [ref]\n\n[ref]: ../d.md\n```\n[no](code.md)\n```\n`[no](x)`\n")
    assert links(doc) == ["b.md", "c.png", "../d.md"]
    assert slug("Adaptive (lean) ranking") == "adaptive-lean-ranking"
    assert slug("Stage V: ranking by `P(Yes)`") == "stage-v-ranking-by-pyes"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    found = links(doc)
    bad = [f"{t}: {why}" for t in found if (why := link_problem(doc, t)) is not None]
    assert not bad, f"{doc.relative_to(REPO)} has links that do not resolve in the repository: {bad}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_doc_points_at_files_outside_the_checkout(doc: Path) -> None:
    """Not even as code text: a user's clone has no ../shared or /work folder."""
    text = doc.read_text(encoding="utf-8")
    for outside in ("../shared", "/work/shared", "/work/main"):
        assert outside not in text, f"{doc.relative_to(REPO)} mentions {outside}"


def test_readme_links_the_docs_it_promises() -> None:
    targets = {t.partition("#")[0] for t in links(REPO / "README.md")}
    for doc in (
        "docs/method.md",
        "docs/agents.md",
        "docs/extending.md",
        "LICENSE",
        "CHANGELOG.md",
        "focus_tool/embedded/model/MODEL_CARD.md",
    ):
        assert doc in targets, f"README.md does not link {doc}"


def test_readme_holds_the_two_commands() -> None:
    readme = REPO / "README.md"
    blocks = "\n".join(m.group(0) for m in FENCE.finditer(readme.read_text(encoding="utf-8")))
    for command in ("./run.sh demo", "./run.sh test"):
        assert re.search(rf"^{re.escape(command)}(\s|$)", blocks, re.M), f"README lacks `{command}` in a code block"
    assert "## Compute and accuracy" in readme.read_text(encoding="utf-8")


def test_method_doc_names_real_config_fields() -> None:
    """Every ``group.field`` that docs/method.md names is a field of FocusConfig (no invented settings)."""
    import dataclasses

    from focus_tool.config import FocusConfig

    cfg = FocusConfig()
    fields = {f"{g.name}.{f.name}" for g in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, g.name))}
    text = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:targets|relevance|proposal|rank|answer)\.[a-z_0-9]+)`", text))
    assert len(named) >= 20, f"docs/method.md ties only {len(named)} settings to config fields"
    assert not named - fields, f"docs/method.md names settings that do not exist: {sorted(named - fields)}"
    assert "## Adaptive (lean) ranking" in text


def test_license_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub


def test_changelog_has_the_released_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    text = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(version)}\]?", text, re.M), f"CHANGELOG.md has no section for {version}"
    assert re.search(r"^## \[?Unreleased\]?", text, re.M)


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "focus_tool.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"focus {importlib.metadata.version('focus-tool')}"


def test_quiet_is_global_and_zoom_keeps_q_for_the_question() -> None:
    parser = build_parser()
    a = parser.parse_args(["zoom", "img.png", "-q", "What colour?"])
    assert (a.quiet, a.question) == (False, "What colour?")
    a = parser.parse_args(["-q", "zoom", "img.png", "-q", "What colour?"])
    assert (a.quiet, a.question) == (True, "What colour?")
    a = parser.parse_args(["--quiet", "eval", "--method", "focus", "--benchmark", "synthetic", "--report", "r.json"])
    assert a.quiet and not a.verbose
    with pytest.raises(SystemExit):
        parser.parse_args(["-q", "-v", "models"])


def test_quiet_silences_warnings_but_not_results(capsys: pytest.CaptureFixture[str]) -> None:
    """`focus -q models` prints the table (a result) and nothing on stderr; logging is raised to ERROR."""
    import logging

    from focus_tool.cli import main

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        for h in list(root.handlers):
            root.removeHandler(h)
        assert main(["-q", "models"]) == 0
        assert root.level == logging.ERROR
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(saved[0])
        for h in saved[1]:
            root.addHandler(h)
    out = capsys.readouterr()
    assert "llava" in out.out and out.err == ""


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_the_demo_and_training_default_outputs_are_ignored_by_git() -> None:
    """`./run.sh demo` writes into the checkout by default; git must not see it (git status stays clean)."""
    parser = build_parser()
    demo_out = parser.parse_args(["demo"]).out
    train_out = parser.parse_args(["train-embedded"]).out
    paths = [f"{demo_out}/demo_0.png", f"{demo_out}/demo_0_overlay.png", f"{train_out}/model.safetensors"]
    res = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert res.stdout.split() == paths, f"not ignored by .gitignore: {set(paths) - set(res.stdout.split())}"

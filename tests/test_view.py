"""The HTML view of a result (focus_tool/view.py): payload, escaping, no network, `zoom --html`, the eval index."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focus_tool.data import synthetic as syn
from focus_tool.errors import InputRejected
from focus_tool.eval.datasets import EvalItem
from focus_tool.eval.records import ItemRecord
from focus_tool.eval.report import index_html, view_path
from focus_tool.inputs import check_output_path
from focus_tool.render import RANK_COLOURS
from focus_tool.result import (
    AnswerEvidence,
    FocusResult,
    ForwardPasses,
    Region,
    RelevanceMapOut,
    ResultStatus,
    ResultWarning,
    TargetStatus,
)
from focus_tool.view import (
    PAYLOAD_VERSION,
    VIEW_META_KEY,
    app_html,
    embedded_payload,
    static_html,
    view_jpeg,
    view_payload,
)

REPO = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
}
XSS = "</script><script>alert(1)</script> <!-- & <b>bold</b>"
URL = re.compile(r"https?://", re.IGNORECASE)


def _result(
    question: str | None = "What is the color of the dots on the red card?", confidence: float = 0.8
) -> FocusResult:
    """A result on a 300 x 200 image without a model: two scored regions, one unscored, a relevance map."""
    regions = [
        Region(
            id="r1",
            box=(30, 40, 130, 140),
            confidence=0.97,
            target="red card",
            rank=1,
            anchor_score=9.0,
            selected=question is not None,
        ),
        Region(id="r2", box=(150, 20, 250, 120), confidence=0.31, target="red card", rank=2, anchor_score=4.0),
        Region(id="r3", box=(0, 100, 100, 200), confidence=None, target="red card", rank=3, anchor_score=1.0),
    ]
    values = np.arange(12, dtype=float).reshape(3, 4)
    evidence = None
    if question is not None:
        rest = (1.0 - confidence) / 3
        options = {"white": confidence, "black": rest, "cyan": rest, "pink": rest}
        evidence = AnswerEvidence(
            kind="options", confidence=confidence, options=options, threshold=0.7, low=confidence < 0.7
        )
    status = ResultStatus(
        question="answered_on_region" if question is not None else "not_asked",
        targets=[TargetStatus(target="red card", state="found", confidence=0.97, threshold=0.5, regions_above=1)],
        warnings=[ResultWarning(code="flat_map", message="the map is <flat> & wide")],
    )
    return FocusResult(
        model_id="test-model",
        image_wh=(300, 200),
        question=question,
        answer="white" if question is not None else None,
        answer_evidence=evidence,
        targets=["red card"],
        target_types=["single"],
        regions=regions,
        answer_view="crop" if question is not None else "none",
        answer_boxes=[(30, 40, 130, 140)] if question is not None else [],
        relevance_maps=[
            RelevanceMapOut(
                target="red card",
                rows=3,
                cols=4,
                values=(values / values.sum()).tolist(),
                view_xyxy=(-50.0, 0.0, 350.0, 200.0),
            )
        ],
        forward_passes=ForwardPasses(search=2, answer=1, extraction=1),
        prefill_tokens=100,
        status=status,
    )


def _image(size: tuple[int, int] = (300, 200)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


class _Scripts(HTMLParser):
    """The document's <script> elements (attributes, text) and every src / href attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.links: list[str] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset", "poster")]
        if tag == "script":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._open is not None:
            self.scripts.append((self._open, "".join(self._text)))
            self._open = None


def _parse(html: str) -> _Scripts:
    parser = _Scripts()
    parser.feed(html)
    parser.close()
    return parser


# ---------------------------------------------------------------- payload


def test_view_jpeg_downscales_keeps_aspect_and_never_upscales() -> None:
    big = view_jpeg(_image((3000, 1000)))
    with Image.open(io.BytesIO(big)) as im:
        assert im.format == "JPEG" and im.size == (1024, 341)
    with Image.open(io.BytesIO(view_jpeg(_image((300, 200)), max_side=1024))) as im:
        assert im.size == (300, 200)  # never upscaled
    with Image.open(io.BytesIO(view_jpeg(_image((300, 200)).convert("RGBA"), max_side=150))) as im:
        assert im.size == (150, 100) and im.mode == "RGB"
    with pytest.raises(ValueError, match="max_side"):
        view_jpeg(_image(), max_side=0)


def test_payload_round_trip() -> None:
    result = _result()
    jpeg = view_jpeg(_image())
    payload = json.loads(json.dumps(view_payload(jpeg, result)))
    assert payload["version"] == PAYLOAD_VERSION == 1
    assert payload["image_wh"] == [300, 200] == list(result.image_wh)
    assert payload["image"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(payload["image"].split(",", 1)[1]) == jpeg
    assert FocusResult.model_validate(payload["result"]) == result
    with pytest.raises(ValueError, match="JPEG"):
        view_payload(b"\x89PNG....", result)


def test_payload_keeps_an_agent_result_session() -> None:
    from focus_tool.agent.wire import AgentResult, SessionInfo

    session = SessionInfo(
        image_sha256="0" * 64,
        cache_hit=False,
        reuse="none",
        forward_passes_saved=0,
        parent_region_id="t1-r1",
        parent_box=(10, 10, 200, 150),
        known_region_ids=["t2-r1"],
    )
    result = AgentResult(**_result().model_dump(), session=session)
    payload = view_payload(view_jpeg(_image()), result)
    assert payload["result"]["session"]["parent_region_id"] == "t1-r1"
    assert AgentResult.model_validate(payload["result"]) == result


# ---------------------------------------------------------------- the page


def test_app_html_is_one_self_contained_page() -> None:
    doc = _parse(app_html())
    assert len(doc.scripts) == 1 and "type" not in doc.scripts[0][0]  # no payload: app mode
    assert embedded_payload(app_html()) is None
    assert not URL.search(app_html()) and doc.links == []
    code = doc.scripts[0][1]
    for needle in (
        '"ui/initialize"',
        '"ui/notifications/initialized"',
        '"ui/notifications/tool-input"',
        '"ui/notifications/tool-result"',
        '"tools/call"',
        '"focus_zoom"',
        '"focus_find"',
        '"2026-01-26"',
        f'"{VIEW_META_KEY}"',
        "window.parent.postMessage",
        "textContent",
    ):
        assert needle in code, needle
    assert "innerHTML" not in code and "insertAdjacentHTML" not in code and "document.write" not in code
    assert json.dumps([list(c) for c in RANK_COLOURS], separators=(",", ":")) in code  # render.py's colours
    for element_id in (
        "question",
        "answer",
        "confidence",
        "status",
        "warnings",
        "view-image",
        "regions",
        "back",
        "message",
        "heat",
        "heat-toggle",
        "heat-opacity",
    ):
        assert f'id="{element_id}"' in app_html(), element_id


@pytest.mark.parametrize("question", [XSS, "What is the color of the dots on the red card?", None])
def test_static_html_embeds_the_payload_safely(question: str | None) -> None:
    result = _result(question)
    result = result.model_copy(update={"answer": XSS if question else None, "targets": [XSS]})
    page = static_html(_image(), result)
    doc = _parse(page)
    payloads = [t for a, t in doc.scripts if a.get("type") == "application/json" and a.get("id") == "focus-payload"]
    executable = [t for a, t in doc.scripts if a.get("type") in (None, "", "text/javascript", "module")]
    assert len(payloads) == 1 and len(executable) == 1 and len(doc.scripts) == 2  # caller text opened no script
    assert executable[0] == _parse(app_html()).scripts[0][1]
    assert not re.search(r"[<>&]", payloads[0])  # escaped as \\u003c \\u003e \\u0026
    payload = json.loads(payloads[0])
    assert payload == json.loads(json.dumps(view_payload(view_jpeg(_image()), result)))
    assert payload["result"]["question"] == question
    assert embedded_payload(page) == payload


def test_static_html_has_no_network() -> None:
    page = static_html(_image(), _result(XSS))
    assert not URL.search(page)
    assert all(link.startswith("data:") for link in _parse(page).links)
    assert "default-src 'none'" in page  # the page's own CSP forbids fetching anything


def test_static_html_refuses_an_image_of_another_size() -> None:
    with pytest.raises(ValueError, match="300x200"):
        static_html(_image((301, 200)), _result())


# ---------------------------------------------------------------- output paths


@pytest.mark.parametrize(
    ("name", "force", "words"),
    [
        ("out.htm", False, "--html must name a .html file"),
        ("out.png", False, "--html must name a .html file"),
        ("exists.html", False, "exists; pass --force to replace it"),
        ("scene.html", True, "is the input image; write the html to another file"),
        ("folder.html", False, "is a directory; name a .html file inside it"),
    ],
)
def test_check_output_path_for_html(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, force: bool, words: str
) -> None:
    (tmp_path / "exists.html").write_text("x")
    (tmp_path / "scene.html").write_bytes(b"png bytes")
    (tmp_path / "folder.html").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputRejected) as e:
        check_output_path(Path(name), inputs=(tmp_path / "scene.html",), force=force, flag="--html", suffix=".html")
    assert words in str(e.value) and "\n" not in str(e.value)
    assert check_output_path(Path("exists.html"), force=True, flag="--html", suffix=".html").name == "exists.html"


# ---------------------------------------------------------------- the command line


def focus(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "focus_tool.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, 0]), "attribute", item_id="view")
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    syn.render(item.scene).save(path)
    return path, item.question.text


@pytest.mark.slow
def test_zoom_writes_html(tmp_path: Path, scene: tuple[Path, str]) -> None:
    image, question = scene
    out = tmp_path / "sub" / "view.html"
    p = focus("zoom", image, "-q", question, "--options", "white|black|cyan|pink", "--html", out, "--json")
    assert p.returncode == 0, p.stderr
    result = FocusResult.model_validate_json(p.stdout)
    payload = embedded_payload(out.read_text(encoding="utf-8"))
    assert payload is not None and FocusResult.model_validate(payload["result"]) == result
    with Image.open(image) as im:
        assert payload["image_wh"] == list(im.size)
    assert not URL.search(out.read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "extra", "words"),
    [
        ("out.txt", [], "--html must name a .html file"),
        ("exists.html", [], "exists; pass --force"),
        ("input", ["--force"], "is the input image"),
    ],
)
def test_zoom_html_refuses_bad_paths(tmp_path: Path, target: str, extra: list[str], words: str) -> None:
    image = tmp_path / "scene.html"  # a PNG under an .html name: the image is read from its bytes
    _image().save(image, format="PNG")
    (tmp_path / "exists.html").write_text("keep")
    out = image if target == "input" else tmp_path / target
    before = out.read_bytes() if out.exists() else None
    p = focus("zoom", image, "-t", "red card", "--html", out, *extra)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("focus: error:") and p.stderr.count("\n") == 1, p.stderr
    assert words in p.stderr
    assert (out.read_bytes() if out.exists() else None) == before  # nothing written


# ---------------------------------------------------------------- the eval index


def _links(page: str) -> list[str]:
    return re.findall(r'<a href="([^"]+\.html)">open</a>', page)


@pytest.mark.slow
def test_eval_writes_index_and_views_and_resumes_without_views(tmp_path: Path) -> None:
    report = tmp_path / "out" / "run.json"
    args = [
        "-q",
        "eval",
        "--method",
        "focus",
        "--benchmark",
        "synthetic",
        "--limit",
        "3",
        "--report",
        report,
        "--data",
        tmp_path / "data",
    ]
    p = focus(*args)
    assert p.returncode == 0, p.stderr
    index = (tmp_path / "out" / "run.html").read_text(encoding="utf-8")
    links = _links(index)
    assert len(links) == 3 and index.count("<tr class=") == 3
    records = [json.loads(line) for line in (tmp_path / "out" / "run.items.jsonl").read_text().splitlines()]
    for rec in records:
        view = view_path(report, "focus", rec["item_id"])
        assert view.is_file() and view.parent.parent == tmp_path / "out" / "run_views"
        assert view.relative_to(report.parent).as_posix() in links
        page = view.read_text(encoding="utf-8")
        payload = embedded_payload(page)
        assert payload is not None and payload["result"]["method"] == "focus"
        assert max(payload["image_wh"]) >= 100 and not URL.search(page)
        assert rec["item_id"] in index and rec["pred"] in index
    # an earlier run's items have no view: the resumed report's index lists them without one
    for view in (tmp_path / "out" / "run_views" / "focus").iterdir():
        view.unlink()
    p = focus(*args)
    assert p.returncode == 0, p.stderr
    index = (tmp_path / "out" / "run.html").read_text(encoding="utf-8")
    assert _links(index) == [] and index.count("<td><em>no view</em></td>") == 3 and index.count("<tr class=") == 3


def test_index_lists_the_worst_and_the_best_first(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    image = _image()
    items, records = {}, []
    # (item id, correct, confidence or None = no view)
    table = [("a", True, 0.6), ("b", False, 0.55), ("c", True, 0.95), ("d", False, 0.9), ("e", True, None)]
    for item_id, correct, conf in table:
        items[item_id] = EvalItem(
            item_id=item_id,
            question=f"question <{item_id}>",
            options=("white", "black"),
            answer_index=0,
            category="attribute",
        )
        records.append(
            ItemRecord(
                item_id=item_id,
                method="focus",
                answer="A",
                pred="A" if correct else "B",
                reply="",
                correct=correct,
                search_fps=1,
                answer_fps=1,
                extraction_fps=0,
                prefill_tokens=1,
                wall_s=0.1,
                peak_mem_mb=1.0,
            )
        )
        if conf is not None:
            view = view_path(report, "focus", item_id)
            view.parent.mkdir(parents=True, exist_ok=True)
            view.write_text(static_html(image, _result(confidence=conf)), encoding="utf-8")
    page = index_html({"benchmark": "synthetic", "methods": {"focus": {"accuracy": 0.6}}}, report, records, items)
    order = re.findall(r"<td>\d+</td><td>(\w)</td>", page)
    assert order == ["d", "b", "c", "a", "e"]  # wrong: most confident first; then right: most confident first
    assert "question &lt;a&gt;" in page and "<a>" not in page  # caller text escaped
    assert "B (black)" in page and "A (white)" in page and page.count("<td><em>no view</em></td>") == 1
    assert "0.550 <span class=low>low</span>" in page and not URL.search(page)

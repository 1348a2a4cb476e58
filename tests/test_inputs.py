"""Bad input through the library: every rejection is a typed FocusError with a message naming the fix."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from contextlib import nullcontext as DoesNotRaise
from pathlib import Path

import pytest
from PIL import Image

from focus_tool.errors import FocusError, InputRejected, ModelLoadError, TargetNotPlaced
from focus_tool.inputs import InputPolicy, check_text, load_image
from tests.bad_inputs import write_huge_header_png, write_png, write_text_as_png, write_truncated_png


def test_error_hierarchy() -> None:
    for cls in (InputRejected, ModelLoadError, TargetNotPlaced):
        assert issubclass(cls, FocusError)
    assert issubclass(TargetNotPlaced, InputRejected)


def _missing(tmp: Path) -> Path:
    return tmp / "nope.png"


def _directory(tmp: Path) -> Path:
    d = tmp / "adir.png"
    d.mkdir()
    return d


@pytest.mark.parametrize(
    ("make", "policy", "raises"),
    [
        (lambda t: write_png(t / "ok.png"), None, DoesNotRaise()),  # a good image
        (_missing, None, pytest.raises(InputRejected, match=r"not found: .*nope\.png; check the path")),
        (_directory, None, pytest.raises(InputRejected, match=r"adir\.png is not a file")),
        (
            lambda t: write_text_as_png(t / "text.png"),
            None,
            pytest.raises(InputRejected, match=r"text\.png is not an image Pillow can read"),
        ),  # text bytes with a .png name
        (
            lambda t: write_truncated_png(t / "cut.png"),
            None,
            pytest.raises(InputRejected, match=r"cannot read .*cut\.png: .*truncated"),
        ),  # header fine, data cut
        (
            lambda t: write_png(t / "small.png", (10, 10)),
            None,
            pytest.raises(InputRejected, match=r"10x10 px; both sides must be at least 32 px"),
        ),  # below the minimum size
        (
            lambda t: write_png(t / "thin.png", (400, 31)),
            None,
            pytest.raises(InputRejected, match=r"400x31 px; both sides must be at least 32"),
        ),  # one side too small
        (
            lambda t: write_png(t / "big.png", (64, 64)),
            InputPolicy(max_pixels=1000),
            pytest.raises(InputRejected, match=r"more than 1,000 pixels; downscale"),
        ),  # 4096 px > 2 x cap: Pillow's bomb error
        (
            lambda t: write_png(t / "big2.png", (40, 40)),
            InputPolicy(max_pixels=1000),
            pytest.raises(InputRejected, match=r"downscale"),
        ),  # 1600 px: between the cap and 2 x cap (Pillow only warns there)
        (
            lambda t: write_huge_header_png(t / "huge.png"),
            None,
            pytest.raises(InputRejected, match=r"more than 100,000,000 pixels; downscale"),
        ),  # header claims 100000 x 100000
        (
            lambda t: write_png(t / "min.png", (32, 32)),
            None,
            DoesNotRaise(),
        ),  # exactly the minimum side
    ],
)
def test_load_image(
    tmp_path: Path, make: Callable[[Path], Path], policy: InputPolicy | None, raises: AbstractContextManager
) -> None:
    path = make(tmp_path)
    before = Image.MAX_IMAGE_PIXELS
    with raises:
        image = load_image(path, policy)
        assert image.mode == "RGB"
    assert before == Image.MAX_IMAGE_PIXELS  # the global bomb guard is restored


@pytest.mark.parametrize(
    ("image", "policy", "raises"),
    [
        (Image.new("RGB", (64, 48)), None, DoesNotRaise()),
        (Image.new("L", (64, 48)), None, DoesNotRaise()),  # converted to RGB
        (Image.new("RGB", (10, 10)), None, pytest.raises(InputRejected, match="at least 32 px")),
        (
            Image.new("RGB", (64, 64)),
            InputPolicy(max_pixels=1000),
            pytest.raises(InputRejected, match=r"64x64 = 4,096 px, above the cap of 1,000"),
        ),
    ],
)
def test_load_image_from_pil(image: Image.Image, policy: InputPolicy | None, raises: AbstractContextManager) -> None:
    with raises:
        out = load_image(image, policy)
        assert out.mode == "RGB" and out.size == image.size


@pytest.mark.parametrize(
    ("text", "policy", "expected", "raises"),
    [
        ("  What   is it? ", None, "What is it?", DoesNotRaise()),  # whitespace collapsed
        ("", None, None, pytest.raises(InputRejected, match="the question is empty")),
        ("   \n\t", None, None, pytest.raises(InputRejected, match="the question is empty")),  # whitespace only
        (None, None, None, pytest.raises(InputRejected, match="the question is empty")),
        (
            "x" * 11,
            InputPolicy(max_question_chars=10),
            None,
            pytest.raises(InputRejected, match="11 characters; the limit is 10"),
        ),
        ("x" * 10, InputPolicy(max_question_chars=10), "x" * 10, DoesNotRaise()),  # exactly the limit
    ],
)
def test_check_text(text: str | None, policy: InputPolicy | None, expected: str | None, raises: AbstractContextManager):
    with raises:
        assert check_text(text, "question", policy) == expected


# ---------------------------------------------------------------- model loading


@pytest.mark.parametrize(
    ("make_path", "match"),
    [
        (lambda t: str(t / "no" / "such" / "model"), r"does not exist"),  # a missing folder
        (lambda t: str(t), r"has no config.json"),  # a folder that is not a checkpoint
        (lambda _t: "nobody-xyz/no-such-model-xyz", r"cannot resolve the hub id"),  # offline, not cached
    ],
)
def test_load_adapter_rejects(tmp_path: Path, make_path: Callable[[Path], str], match: str) -> None:
    from focus_tool.adapters.registry import load_adapter

    with pytest.raises(ModelLoadError, match=match):
        load_adapter(make_path(tmp_path))


def test_load_adapter_bad_config(tmp_path: Path) -> None:
    from focus_tool.adapters.registry import load_adapter

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match=r"unsupported architecture 'bert'.*supported: llava"):
        load_adapter(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"is not a transformers model config"):
        load_adapter(tmp_path)


def test_llava_from_pretrained_missing(tmp_path: Path) -> None:
    from focus_tool.adapters.llava import LlavaAdapter

    with pytest.raises(ModelLoadError, match=r"cannot load a LLaVA checkpoint from .*missing"):
        LlavaAdapter.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------- through the pipeline, tiny model


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    from focus_tool.adapters.llava import LlavaAdapter
    from focus_tool.pipeline import FocusPipeline
    from tests.tiny_models import save_tiny_llava

    path = save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
    return FocusPipeline(LlavaAdapter.from_pretrained(path))


@pytest.mark.parametrize(
    ("kwargs", "raises"),
    [
        ({"question": ""}, pytest.raises(InputRejected, match="the question is empty")),
        ({"question": "   "}, pytest.raises(InputRejected, match="the question is empty")),
        ({"target": "   "}, pytest.raises(InputRejected, match="the target is empty")),  # whitespace-only target
        ({"target": ["red card", ""]}, pytest.raises(InputRejected, match="the target is empty")),  # one bad of two
        ({}, pytest.raises(InputRejected, match="give a question or a target")),
        (
            {"target": "zebra"},
            pytest.raises(TargetNotPlaced, match=r"vocabulary has no token for the target 'zebra'"),
        ),  # not in the tiny model's closed vocabulary
    ],
)
def test_pipeline_rejects(pipeline, kwargs: dict, raises: AbstractContextManager) -> None:
    image = Image.new("RGB", (64, 48), (200, 10, 10))
    with raises:
        pipeline.zoom(image, **kwargs)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_missing, "not found"),
        (lambda t: write_text_as_png(t / "text.png"), "not an image"),
        (lambda t: write_png(t / "small.png", (10, 10)), "at least 32 px"),
    ],
)
def test_pipeline_rejects_image_path(pipeline, tmp_path: Path, make: Callable[[Path], Path], match: str) -> None:
    with pytest.raises(InputRejected, match=match):
        pipeline.zoom(str(make(tmp_path)), target="red card")


def test_pipeline_rejects_before_any_model_call(pipeline) -> None:
    pipeline.adapter.counter.reset()
    with pytest.raises(InputRejected):
        pipeline.zoom(Image.new("RGB", (64, 48)), target="  ")
    assert pipeline.adapter.counter.counts == {"search": 0, "answer": 0, "aux": 0}

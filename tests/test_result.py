"""FocusResult / Region: validation and JSON round trip."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from contextlib import nullcontext as DoesNotRaise

import pytest
from pydantic import ValidationError

from focus_tool.result import SCHEMA_VERSION, FocusResult, ForwardPasses, Region, RelevanceMapOut


def _region(**kw: object) -> Region:
    base: dict[str, object] = {
        "id": "r1",
        "box": (1, 2, 30, 40),
        "confidence": 0.75,
        "target": "red card",
        "rank": 1,
        "anchor_score": 3.2,
        "selected": True,
    }
    base.update(kw)
    return Region(**base)  # type: ignore[arg-type]


def _result() -> FocusResult:
    return FocusResult(
        model_id="tiny",
        image_wh=(96, 64),
        question="What colour is the card?",
        answer="red",
        targets=["red card", "dog"],
        target_types=["single", "all"],
        regions=[
            _region(),
            _region(id="r2", box=(50, 10, 90, 60), confidence=None, rank=2, anchor_score=1.0, selected=False),
            _region(id="r3", target="dog", confidence=0.0, box=(0, 0, 1, 1)),
        ],
        answer_view="union",
        answer_boxes=[(1, 2, 90, 60)],
        relevance_maps=[
            RelevanceMapOut(
                target="red card", rows=2, cols=2, values=[[0.1, 0.2], [0.3, 0.4]], view_xyxy=(0, -16, 96, 80)
            )
        ],
        full_image_confidence={"red card": 0.123456, "dog": 1.0},
        forward_passes=ForwardPasses(search=5, answer=1, extraction=1),
        prefill_tokens=1234,
        timings_s={"targets": 0.01, "answer": 1.5},
    )


def test_json_round_trip() -> None:
    r = _result()
    again = FocusResult.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.regions[0].box == (1, 2, 30, 40)  # tuples come back as tuples
    assert again.schema_version == SCHEMA_VERSION
    assert FocusResult.model_validate_json(r.model_dump_json(indent=1)) == r


def test_json_round_trip_minimal() -> None:
    r = FocusResult(
        model_id="m",
        image_wh=(32, 32),
        forward_passes=ForwardPasses(search=0, answer=0, extraction=0),
        prefill_tokens=0,
    )
    assert FocusResult.model_validate_json(r.model_dump_json()) == r
    assert r.answer_view == "none" and r.method == "focus" and r.regions == []


def test_old_results_with_aux_read_back() -> None:
    """A result written before the extraction phase was renamed says ``aux``: it reads, and writes ``extraction``."""
    data = json.loads(_result().model_dump_json())
    data["forward_passes"] = {
        "search": 5,
        "answer": 1,
        "aux": 1,
        "tokens": {"search": 400, "answer": 20, "aux": 100},
        "images": {"search": 2, "answer": 1, "aux": 0},
    }
    old = FocusResult.model_validate_json(json.dumps(data))
    fp = old.forward_passes
    assert (fp.extraction, fp.tokens.extraction, fp.images.extraction) == (1, 100, 0)
    again = json.loads(old.model_dump_json())["forward_passes"]
    assert "aux" not in again and "aux" not in again["tokens"] and again["tokens"]["extraction"] == 100
    assert FocusResult.model_validate_json(old.model_dump_json()) == old


@pytest.mark.parametrize(
    ("kw", "raises"),
    [
        ({}, DoesNotRaise()),
        ({"confidence": None}, DoesNotRaise()),  # not scored
        ({"confidence": 0.0}, DoesNotRaise()),  # bounds are inclusive
        ({"confidence": 1.0}, DoesNotRaise()),
        ({"confidence": -0.01}, pytest.raises(ValidationError, match="confidence")),  # below 0
        ({"confidence": 1.01}, pytest.raises(ValidationError, match="confidence")),  # above 1
        ({"confidence": float("nan")}, pytest.raises(ValidationError, match="confidence")),  # nan is not in [0, 1]
        ({"box": (5, 5, 5, 10)}, pytest.raises(ValidationError, match="x1 > x0")),  # zero width
        ({"box": (5, 5, 10, 5)}, pytest.raises(ValidationError, match="y1 > y0")),  # zero height
        ({"box": (10, 5, 5, 10)}, pytest.raises(ValidationError, match="x1 > x0")),  # inverted
        ({"box": (1, 2, 3)}, pytest.raises(ValidationError)),  # three numbers
        ({"box": (1.5, 2, 3, 4)}, pytest.raises(ValidationError)),  # not integer pixels
        ({"rank": 0}, pytest.raises(ValidationError, match="rank")),  # ranks start at 1
    ],
)
def test_region_validation(kw: dict, raises: AbstractContextManager) -> None:
    with raises:
        _region(**kw)


def test_region_is_frozen() -> None:
    with pytest.raises(ValidationError):
        _region().confidence = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("answer_view", "zoomed"),  # not one of the modes
        ("method", "other"),
        ("prefill_tokens", -1),
        ("target_types", ["some"]),
    ],
)
def test_result_rejects(field: str, value: object) -> None:
    data = _result().model_dump()
    data[field] = value
    with pytest.raises(ValidationError, match=field):
        FocusResult.model_validate(data)


def test_json_schema_validates_dump() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = FocusResult.model_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(json.loads(_result().model_dump_json()))
    bad = json.loads(_result().model_dump_json())
    bad["regions"][0]["confidence"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    bad = json.loads(_result().model_dump_json())
    del bad["forward_passes"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)

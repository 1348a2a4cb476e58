"""Results an agent can trust: not found and ambiguous on the embedded model (refusals: tests/test_world.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from focus_tool.adapters.registry import load_adapter
from focus_tool.config import FocusConfig
from focus_tool.data import synthetic as syn
from focus_tool.pipeline import FocusPipeline
from focus_tool.presets import config_for
from focus_tool.steps.ranking import Ranking
from focus_tool.steps.status import distinct_objects, same_object, target_status
from focus_tool.steps.targets import Target


@pytest.fixture(scope="module")
def pipe() -> FocusPipeline:
    adapter = load_adapter()  # the embedded model, with its shipped preset
    return FocusPipeline(adapter, config_for(adapter))


def _scene(cards: list[syn.Card], wh: tuple[int, int] = (1024, 768)) -> Image.Image:
    return syn.render(syn.Scene(size_wh=wh, background=(128, 128, 128), cards=tuple(cards), noise_seed=3))


def _card(x: float, y: float, color: str, pips: int = 3, pip_color: str = "white") -> syn.Card:
    return syn.Card(xyxy=(x, y, x + 60, y + 60), color=color, pip_color=pip_color, n_pips=pips)


def test_an_absent_target_is_not_found_and_nothing_is_selected(pipe: FocusPipeline) -> None:
    image = _scene([_card(200, 300, "blue"), _card(700, 200, "green")])
    result = pipe.zoom(image, target="red card")
    (target,) = result.status.targets
    assert target.state == "not_found"
    assert not any(r.selected for r in result.regions) and result.answer_boxes == []
    assert "nothing_found" in {w.code for w in result.status.warnings}


def test_an_absent_target_in_a_question_is_answered_on_the_whole_image(pipe: FocusPipeline) -> None:
    image = _scene([_card(200, 300, "blue"), _card(700, 200, "green")])
    result = pipe.zoom(
        image, question="What is the color of the dots on the red card?", options=["white", "black", "cyan", "pink"]
    )
    assert result.status.targets[0].state == "not_found"
    assert result.status.question == "answered_on_whole_image" and result.answer_view == "full"
    assert result.answer is not None


def test_two_red_cards_are_flagged_ambiguous(pipe: FocusPipeline) -> None:
    image = _scene([_card(150, 300, "red"), _card(800, 350, "red", pips=4), _card(480, 600, "blue")])
    result = pipe.zoom(image, question="How many dots are on the red card?", options=["1", "2", "3", "4"])
    (target,) = result.status.targets
    assert target.state == "ambiguous" and target.regions_above == 2  # two distinct objects
    (warning,) = [w for w in result.status.warnings if w.code == "ambiguous"]
    assert warning.message.startswith("2 distinct objects look like 'red card'")
    assert result.status.question == "answered_on_region"


@pytest.mark.parametrize(
    ("color", "others"),
    [("purple", ("orange", "green")), ("red", ("red", "blue"))],  # one purple card; one of two red cards
)
def test_a_zoom_into_one_found_card_stays_found(pipe: FocusPipeline, color: str, others: tuple[str, str]) -> None:
    """Zooming into the region of one card gives several overlapping crops of it above the threshold: one object."""
    image = _scene([_card(800, 350, color), _card(150, 300, others[0]), _card(480, 600, others[1])])
    found = pipe.zoom(image, target=f"{color} card")
    box = next(r.box for r in found.regions if r.selected and r.box[0] <= 830 <= r.box[2])  # the card at x 800
    inner = pipe.zoom(image.crop(box), target=f"{color} card")  # what a region_id zoom runs
    (target,) = inner.status.targets
    assert sum((r.confidence or 0.0) >= target.threshold for r in inner.regions) >= 2
    assert target.state == "found" and target.regions_above == 1
    assert "ambiguous" not in {w.code for w in inner.status.warnings}


def test_one_red_card_is_found_and_answered_on_its_region(pipe: FocusPipeline) -> None:
    image = _scene([_card(150, 300, "red"), _card(800, 350, "blue", pips=4), _card(480, 600, "green")])
    result = pipe.zoom(
        image, question="What is the color of the dots on the red card?", options=["white", "black", "cyan", "pink"]
    )
    (target,) = result.status.targets
    assert target.state == "found" and target.confidence >= target.threshold
    assert result.status.question == "answered_on_region" and result.status.warnings == []
    box = next(r.box for r in result.regions if r.selected)
    assert box[0] <= 150 + 30 <= box[2] and box[1] <= 300 + 30 <= box[3]


def test_an_invented_target_is_replaced_by_the_questions_own_phrase(pipe: FocusPipeline, monkeypatch) -> None:
    adapter = pipe.adapter
    real = adapter.generate
    monkeypatch.setattr(
        adapter,
        "generate",
        lambda image, text, **kw: "I need the info about purple card." if image is None else real(image, text, **kw),
    )
    image = _scene([_card(150, 300, "red")])
    result = pipe.zoom(image, question="What is the color of the dots on the red card?", answer=False)
    assert result.targets == ["red card"]  # the question's own phrase: the dots are a part of the card
    codes = [w.code for w in result.status.warnings]
    assert "target_not_in_question" in codes


@pytest.mark.slow
def test_found_on_at_least_95_percent_of_the_test_split(pipe: FocusPipeline) -> None:
    items = syn.benchmark_items(0, 300)
    found = 0
    for item in items:
        result = pipe.zoom(syn.render(item.scene), question=item.question.text, answer=False)
        found += all(t.state in ("found", "ambiguous") for t in result.status.targets)
    assert found / len(items) >= 0.95, found


def test_pipeline_flag_gives_the_papers_ranking_back(tmp_path, capsys) -> None:
    import json

    from focus_tool.cli import main

    path = tmp_path / "one_card.png"
    _scene([_card(150, 300, "red"), _card(800, 350, "blue"), _card(480, 600, "green")]).save(path)
    passes = {}
    for name in ("paper", "lean"):
        assert main(["zoom", str(path), "-t", "red card", "--pipeline", name, "--json"]) == 0
        passes[name] = json.loads(capsys.readouterr().out)["forward_passes"]["search"]
    assert passes["lean"] == 2  # one relevance prefill + the first region's existence check, accepted
    assert passes["paper"] >= 1 + 4  # the paper scores n_steps = 4 regions


# ------------------------------------------------------------------------------ distinct objects (pure, no model)

MAP = np.zeros((6, 10))
MAP[1:4, 1:4] = 1.0  # one object
MAP[1:4, 6:9] = 1.0  # another, with a zero column (background) at cols 4-5 between them


@pytest.mark.parametrize(
    ("a", "b", "dip", "same"),
    [
        ((1, 1, 3, 3), (2, 2, 4, 4), 0.5, True),  # overlapping crops on one object
        ((1, 1, 3, 3), (3, 1, 4, 3), 0.5, True),  # touching crops on one object (no overlap at all)
        ((1, 1, 3, 3), (1, 3, 3, 4), 0.5, True),  # touching below
        ((1, 1, 2, 2), (3, 1, 4, 2), 0.5, False),  # one cell apart: distinct, whatever the map says
        ((2, 1, 5, 4), (5, 1, 8, 4), 0.5, False),  # touching, but the map falls to zero in between
        ((2, 1, 5, 4), (5, 1, 8, 4), 0.0, True),  # object_dip 0: touching alone decides
        ((2, 1, 5, 4), (4, 1, 8, 4), 0.5, False),  # overlapping boxes over two objects: the dip separates them
    ],
)
def test_same_object(a: tuple[int, ...], b: tuple[int, ...], dip: float, same: bool) -> None:
    assert same_object(np.asarray(a, float), np.asarray(b, float), MAP, dip) is same
    assert same_object(np.asarray(b, float), np.asarray(a, float), MAP, dip) is same  # symmetric


@pytest.mark.parametrize(
    ("boxes", "order", "kept"),
    [
        ([], [], ()),
        ([(1, 1, 3, 3)], [0], (0,)),
        ([(1, 1, 3, 3), (2, 2, 4, 4), (1, 2, 3, 4)], [1, 0, 2], (1,)),  # three crops of one object: the best kept
        ([(1, 1, 3, 3), (6, 1, 8, 3), (2, 1, 4, 3)], [0, 1, 2], (0, 1)),  # two objects
        ([(6, 1, 8, 3), (1, 1, 3, 3), (7, 2, 9, 4)], [2, 1, 0], (2, 1)),  # kept in confidence order
    ],
)
def test_distinct_objects(boxes: list[tuple[int, ...]], order: list[int], kept: tuple[int, ...]) -> None:
    cells = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    assert distinct_objects(order, cells, MAP, 0.5) == kept


def test_regions_above_counts_objects_and_the_warning_says_how_many() -> None:
    cfg = FocusConfig()
    boxes = np.asarray([(1, 1, 3, 3), (2, 2, 4, 4), (6, 1, 8, 3), (7, 2, 9, 4)], dtype=np.float64)
    conf = {0: 0.99, 1: 0.98, 2: 0.97, 3: 0.4}
    ranking = Ranking(scored=(0, 1, 2, 3), confidence=conf, selected=(0,), passes=4)
    single, both = Target("red card"), Target("red card", all_instances=True)
    status, warnings, selected = target_status(single, ranking, [9.0, 8.0], cfg, boxes_cells=boxes, relevance=MAP)
    assert (status.state, status.regions_above, selected) == ("ambiguous", 2, (0,))
    assert [w.message.split(" look")[0] for w in warnings] == ["2 distinct objects"]
    one = Ranking(scored=(0, 1, 3), confidence={0: 0.99, 1: 0.98, 3: 0.4}, selected=(0,), passes=3)
    status, warnings, _ = target_status(single, one, [9.0, 8.0], cfg, boxes_cells=boxes, relevance=MAP)
    assert (status.state, status.regions_above, warnings) == ("found", 1, [])
    status, _, _ = target_status(both, ranking, [9.0, 8.0], cfg, boxes_cells=boxes, relevance=MAP)
    assert (status.state, status.regions_above) == ("found", 2)  # "all" targets: counted, never ambiguous

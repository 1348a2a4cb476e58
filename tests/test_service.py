"""The agent engine layer: path/base64/image policy, session cache with per-caller region ids, the inference gate."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from focus_tool.agent import (
    AgentPolicy,
    FocusService,
    InferenceGate,
    ServiceBusy,
    SessionCache,
    check_path,
    decode_base64,
    open_image,
    summary_json,
)
from focus_tool.errors import InputRejected
from focus_tool.inputs import InputPolicy
from focus_tool.result import FocusResult, ForwardPasses, Region
from tests.agent_support import ScriptedEngine
from tests.bad_inputs import write_huge_header_png, write_png, write_text_as_png, write_truncated_png
from tests.http_images import ImageServer, Route, serve_routes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "allowed"
    r.mkdir()
    write_png(r / "scene.png", (256, 192))
    return r


@pytest.fixture
def policy(root: Path) -> AgentPolicy:
    return AgentPolicy(allowed_roots=(root,), max_base64_bytes=200_000, image=InputPolicy(max_pixels=4_000_000))


def test_roots_are_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert AgentPolicy(allowed_roots=(tmp_path / "link",)).allowed_roots == (real.resolve(),)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda root: "scene.png", "must be an absolute path"),
        (lambda root: str(root / ".." / "outside.png"), "outside the allowed folders"),
        (lambda root: str(root / "missing.png"), "no such file"),
        (lambda root: str(root), "not a regular file"),
        (lambda root: str(root / "link.png"), "outside the allowed folders"),  # symlink escape
        (lambda root: str(root) + "/scene.png\x00.txt", "NUL byte"),
        (lambda root: "https://example.com/cat.png", "URL inputs are disabled"),
        (lambda root: "file:///etc/passwd", "URL inputs are disabled"),
        (lambda root: str(root.parent / "allowed-secret" / "x.png"), "outside the allowed folders"),  # prefix trick
    ],
)
def test_path_rules(root: Path, policy: AgentPolicy, make, fragment: str) -> None:
    outside = root.parent / "outside.png"
    write_png(outside)
    (root / "link.png").symlink_to(outside)
    (root.parent / "allowed-secret").mkdir()
    write_png(root.parent / "allowed-secret" / "x.png")
    with pytest.raises(InputRejected, match=fragment):
        check_path(make(root), policy)


def test_no_roots_refuses_every_path(root: Path) -> None:
    with pytest.raises(InputRejected, match="no allowed image folders"):
        check_path(str(root / "scene.png"), AgentPolicy())


def test_file_size_cap(root: Path) -> None:
    with pytest.raises(InputRejected, match="the limit is 100;"):
        check_path(str(root / "scene.png"), AgentPolicy(allowed_roots=(root,), image=InputPolicy(max_file_bytes=100)))


@pytest.mark.parametrize(
    ("writer", "fragment"),
    [
        (write_text_as_png, "not a supported image"),
        (write_truncated_png, "cannot be decoded"),
        (lambda p: write_huge_header_png(p, 3000, 3000), "the limit is 4,000,000 px"),  # our own cap
        (lambda p: write_huge_header_png(p, 20_000, 20_000), "too many pixels"),  # Pillow's bomb error
        (lambda p: write_png(p, (16, 64)), "at least 32 px"),
    ],
)
def test_bad_image_files(root: Path, policy: AgentPolicy, writer, fragment: str) -> None:
    path = root / "bad.png"
    writer(path)
    with pytest.raises(InputRejected, match=fragment):
        open_image(policy, image_path=str(path))


def test_eps_is_never_decoded(root: Path, policy: AgentPolicy) -> None:
    (root / "x.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    with pytest.raises(InputRejected, match="not a supported image"):
        open_image(policy, image_path=str(root / "x.eps"))


def test_base64_rules(root: Path, policy: AgentPolicy) -> None:
    data = (root / "scene.png").read_bytes()
    ok = open_image(policy, image_base64=base64.b64encode(data).decode())
    assert ok.image.size == (256, 192)
    assert open_image(policy, image_path=str(root / "scene.png")).sha256 == ok.sha256  # same bytes, same key
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert open_image(policy, image_base64=url).sha256 == ok.sha256
    with pytest.raises(InputRejected, match="the limit is 266,668"):
        decode_base64("A" * 300_000, policy)
    with pytest.raises(InputRejected, match="not valid base64"):
        decode_base64("not base64!!", policy)
    with pytest.raises(InputRejected, match="exactly one"):
        open_image(policy)
    with pytest.raises(InputRejected, match="exactly one"):
        open_image(policy, image_path=str(root / "scene.png"), image_base64="AAAA")


def _token(region_id: str) -> str:
    """The per-result token of an issued id '<token>-r<n>'."""
    token, local = region_id.split("-")
    assert len(token) >= 7 and local.startswith("r"), region_id
    return token


def test_region_zoom_maps_boxes_back_and_sub_regions_get_their_own_token(root: Path, policy: AgentPolicy) -> None:
    engine = ScriptedEngine()
    service = FocusService(engine, policy)
    path = str(root / "scene.png")
    first = service.zoom(image_path=path, question="colour?", target="card")
    r1, r2 = (r.id for r in first.result.regions)
    assert _token(r1) == _token(r2) and [r1[-3:], r2[-3:]] == ["-r1", "-r2"]
    assert first.result.regions[0].box == (64, 48, 128, 96)
    assert first.result.session.cache_hit is False and first.result.session.forward_passes_saved == 0

    inner = service.zoom(image_path=path, question="colour?", target="card", region_id=r1)
    assert engine.calls[-1] == (64, 48)  # the model saw the crop only
    # ScriptedEngine puts r1 at [w/4, h/4, w/2, h/2] of the crop: (16, 12, 32, 24) + origin (64, 48)
    sub = inner.result.regions[0].id
    assert sub.endswith("-r1") and _token(sub) != _token(r1)  # a fresh token, not 'r1.1'
    assert inner.result.regions[0].box == (80, 60, 96, 72)
    assert inner.result.image_wh == (256, 192)
    assert inner.result.answer_boxes == [(80, 60, 96, 72)]
    assert inner.result.session.parent_region_id == r1
    assert inner.result.session.parent_box == (64, 48, 128, 96)
    known = inner.result.session.known_region_ids
    assert set(known) == {r1, r2, *(r.id for r in inner.result.regions)}
    assert known[-2:] == [r.id for r in inner.result.regions]  # the most recent last

    deeper = service.zoom(image_path=path, target="card", region_id=sub)
    assert deeper.result.session.parent_region_id == sub
    assert deeper.result.session.parent_box == (72, 50, 104, 82)  # grown about its centre to 32 px


def test_identical_request_is_a_result_cache_hit(root: Path, policy: AgentPolicy) -> None:
    engine = ScriptedEngine()
    service = FocusService(engine, policy)
    path = str(root / "scene.png")
    first = service.zoom(image_path=path, question="colour?")
    again = service.zoom(image_path=path, question="  colour? ")
    assert len(engine.calls) == 1
    assert again.result.session.cache_hit is True
    assert again.result.session.reuse == "result"
    assert again.result.session.forward_passes_saved == 6  # search 4 + answer 1 + extraction 1
    assert [r.box for r in again.result.regions] == [r.box for r in first.result.regions]
    assert _token(again.result.regions[0].id) != _token(first.result.regions[0].id)  # ids are never reused
    for r in (first.result.regions[0], again.result.regions[0]):  # both calls' ids stay usable
        assert service.zoom(image_path=path, target="card", region_id=r.id).result.session.parent_box == r.box
    other = service.zoom(image_path=path, question="shape?")
    assert other.result.session.forward_passes_saved == 0
    assert '"cache_hit":false' in summary_json(other)


def test_a_region_id_not_returned_to_the_caller_is_refused_in_one_line(root: Path, policy: AgentPolicy) -> None:
    service = FocusService(ScriptedEngine(), policy)
    path = str(root / "scene.png")
    with pytest.raises(InputRejected, match=r"region_id 'r1' is unknown: .* without region_id first") as info:
        service.zoom(image_path=path, target="card", region_id="r1")
    assert "\n" not in str(info.value)
    ids = [r.id for r in service.zoom(image_path=path, target="card").result.regions]
    with pytest.raises(InputRejected, match=rf"region_id 'r7' is unknown: .*\(e\.g\. {ids[0]}, {ids[1]}\)"):
        service.zoom(image_path=path, target="card", region_id="r7")
    with pytest.raises(InputRejected, match="not returned to this caller"):  # the id of a result on another image
        service.zoom(image_path=str(write_png(root / "other.png", (200, 300))), target="card", region_id=ids[0])


def test_region_ids_belong_to_the_caller_they_were_returned_to(root: Path, policy: AgentPolicy) -> None:
    engine = ScriptedEngine()
    service = FocusService(engine, policy)
    path = str(root / "scene.png")
    a = service.zoom(image_path=path, target="card", caller="A").result
    b = service.zoom(image_path=path, target="card", caller="B").result  # identical request: a cache hit...
    assert b.session.cache_hit and len(engine.calls) == 1
    a_ids, b_ids = [r.id for r in a.regions], [r.id for r in b.regions]
    assert not set(a_ids) & set(b_ids)  # ...with fresh ids registered to B
    assert a.session.known_region_ids == a_ids and b.session.known_region_ids == b_ids
    with pytest.raises(InputRejected, match=f"region_id '{a_ids[0]}' is unknown: it was not returned to this caller"):
        service.zoom(image_path=path, target="card", region_id=a_ids[0], caller="B")
    with pytest.raises(InputRejected, match="is unknown"):
        service.zoom(image_path=path, target="card", region_id=a_ids[0])  # the default caller "" is a caller too
    inner_b = service.zoom(image_path=path, target="card", region_id=b_ids[0], caller="B").result
    inner_a = service.zoom(image_path=path, target="card", region_id=a_ids[0], caller="A").result
    assert inner_b.session.parent_box == b.regions[0].box == inner_a.session.parent_box
    assert inner_a.session.cache_hit and len(engine.calls) == 2  # same crop: A reuses B's zoom, under its own ids
    assert not {r.id for r in inner_a.regions} & {r.id for r in inner_b.regions}


def _result(n_regions: int, wh: tuple[int, int] = (100, 80)) -> FocusResult:
    regions = [
        Region(id=f"r{i}", box=(i, 0, i + 10, 10), confidence=0.9, target="card", rank=i, anchor_score=1.0)
        for i in range(1, n_regions + 1)
    ]
    return FocusResult(
        model_id="m",
        image_wh=wh,
        targets=["card"],
        regions=regions,
        forward_passes=ForwardPasses(search=0, answer=0, extraction=0),
        prefill_tokens=0,
    )


def test_session_cache_ids_are_unique_and_owned() -> None:
    cache = SessionCache(max_images=2, max_regions_per_image=8)
    seen: set[str] = set()
    first = ""
    for i in range(1000):  # 1000 results of one region each: no id repeats, even after the early ones expired
        issued, known = cache.issue("img", f"caller{i % 3}", _result(1))
        (rid,) = (r.id for r in issued.regions)
        assert rid not in seen and rid.endswith("-r1") and rid in known
        seen.add(rid)
        first = first or rid
    assert len(seen) == 1000
    issued, _ = cache.issue("img", "A", _result(3))
    a1, a2, a3 = (r.id for r in issued.regions)
    assert issued.regions[1].box == (2, 0, 12, 10) and cache.region_box("img", a2, "A") == (2, 0, 12, 10)
    for caller, sha in (("B", "img"), ("", "img"), ("A", "other")):  # another caller, or another image
        with pytest.raises(InputRejected, match="not returned to this caller"):
            cache.region_box(sha, a1, caller)
    with pytest.raises(InputRejected, match="is unknown"):
        cache.region_box("img", first, "caller0")  # expired: 8 ids per image are kept (LRU)
    cache.issue("img2", "A", _result(1))
    cache.issue("img3", "A", _result(1))  # two images are kept: "img" is forgotten with its ids
    with pytest.raises(InputRejected, match=r"call again on this image without region_id first"):
        cache.region_box("img", a3, "A")
    assert cache.known_ids("img", "A") == []


def test_max_crops_and_output_caps(root: Path, policy: AgentPolicy) -> None:
    service = FocusService(ScriptedEngine(), policy)
    path = str(root / "scene.png")
    with pytest.raises(InputRejected, match="between 1 and 8"):
        service.zoom(image_path=path, target="card", max_crops=9)
    out = service.zoom(image_path=path, target="card", max_crops=1)
    assert len(out.crops_jpeg) == 1 and out.crops_jpeg[0][:2] == b"\xff\xd8"
    tiny_budget = FocusService(ScriptedEngine(), AgentPolicy(allowed_roots=(root,), max_output_bytes=10))
    assert tiny_budget.zoom(image_path=path, target="card").crops_jpeg == []


def test_gate_bounds_the_queue_and_times_out() -> None:
    gate = InferenceGate(max_waiting=1, timeout_s=0.3)
    release = threading.Event()
    entered = threading.Event()

    def hold() -> None:
        with gate.slot():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    errors: list[str] = []

    def wait_in_queue() -> None:
        try:
            with gate.slot():
                pass
        except ServiceBusy as e:
            errors.append(str(e))

    waiter = threading.Thread(target=wait_in_queue)
    waiter.start()
    deadline = time.monotonic() + 5
    while gate.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ServiceBusy, match="already queued"), gate.slot():
        pass
    waiter.join(5)
    assert errors and "retry later" in errors[0]  # the queued caller timed out
    release.set()
    holder.join(5)
    with gate.slot():  # free again
        pass


def test_progress_reaches_the_engine_and_a_cache_hit_runs_no_step(root: Path, policy: AgentPolicy) -> None:
    steps: list[tuple[str, float]] = []
    service = FocusService(ScriptedEngine(), policy)
    path = str(root / "scene.png")
    service.zoom(image_path=path, target="card", progress=lambda m, f: steps.append((m, f)))
    assert steps == [("targets", 0.0), ("search card", 0.5), ("done", 1.0)]
    service.zoom(image_path=path, target="card", progress=lambda m, f: steps.append((m, f)))
    assert len(steps) == 3


# ---------------------------------------------------------------------------------------------------- URL inputs


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    png = write_png(tmp_path_factory.mktemp("web") / "scene.png", (256, 192)).read_bytes()
    routes = {
        "/scene.png": Route(body=png),
        "/text.png": Route(body=b"this is not an image\n" * 20),
        "/page": Route(content_type="text/html", body=b"<html></html>"),
    }
    with serve_routes(routes) as server:
        yield server


def url_policy(**kw: object) -> AgentPolicy:
    args: dict[str, object] = {"allow_urls": True, "url_allow_private": True, "url_timeout_s": 5.0, **kw}
    return AgentPolicy(**args)  # type: ignore[arg-type]


def test_urls_are_refused_unless_allowed(web: ImageServer, root: Path) -> None:
    for url in (web.url("/scene.png"), "file:///etc/passwd", "ftp://example.com/a.png"):
        with pytest.raises(InputRejected, match="URL inputs are disabled"):
            open_image(AgentPolicy(allowed_roots=(root,)), image_path=url)


def test_allowed_url_is_fetched_and_keyed_by_its_bytes(web: ImageServer, root: Path) -> None:
    loaded = open_image(url_policy(), image_path=web.url("/scene.png"))
    assert loaded.source == "url" and loaded.image.size == (256, 192)
    local = open_image(AgentPolicy(allowed_roots=(root,)), image_path=str(root / "scene.png"))
    assert loaded.sha256 == local.sha256  # write_png is deterministic: same bytes, same cache key


@pytest.mark.parametrize(
    ("path_or_url", "kw", "fragment"),
    [
        ("/scene.png", {"url_allow_private": False}, "resolves to a non-public address"),
        ("/scene.png", {"max_base64_bytes": 1_000}, "the limit is 1,000"),  # the base64 cap is the download cap
        ("/missing.png", {}, "HTTP 404"),
        ("/page", {}, "is not an image (content type text/html)"),
        ("/text.png", {}, "the image at the URL is not a supported image"),  # decoded with the same checks
        ("file:///etc/passwd", {}, "only http:// and https://"),
        ("ftp://example.com/a.png", {}, "only http:// and https://"),
    ],
)
def test_allowed_url_refusals(web: ImageServer, path_or_url: str, kw: dict[str, object], fragment: str) -> None:
    url = path_or_url if "://" in path_or_url else web.url(path_or_url)
    with pytest.raises(InputRejected) as e:
        open_image(url_policy(**kw), image_path=url)
    assert fragment in str(e.value)


def test_service_zooms_on_a_url(web: ImageServer) -> None:
    engine = ScriptedEngine()
    out = FocusService(engine, url_policy()).zoom(image_path=web.url("/scene.png"), target="card")
    assert engine.calls == [(256, 192)] and out.result.regions[0].box == (64, 48, 128, 96)


@pytest.mark.parametrize(
    ("kw", "fragment"), [({"url_timeout_s": 0}, "url_timeout_s"), ({"url_max_redirects": -1}, "url_max_redirects")]
)
def test_url_settings_are_checked(kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        AgentPolicy(**kw)  # type: ignore[arg-type]


def test_result_reuse_can_be_switched_off(root: Path, policy: AgentPolicy) -> None:
    engine = ScriptedEngine()
    service = FocusService(engine, policy, reuse_results=False)
    path = str(root / "scene.png")
    first = service.zoom(image_path=path, target="card")
    again = service.zoom(image_path=path, target="card")
    assert len(engine.calls) == 2 and not again.result.session.cache_hit
    assert [r.box for r in again.result.regions] == [r.box for r in first.result.regions]
    rid = first.result.regions[0].id
    assert service.zoom(image_path=path, target="card", region_id=rid).result.session.parent_region_id == rid


def test_a_new_question_on_the_same_image_reuses_the_encoded_image(root: Path, policy: AgentPolicy) -> None:
    from focus_tool.adapters.llava import LlavaAdapter
    from focus_tool.config import FocusConfig, ProposalConfig, RankConfig
    from focus_tool.pipeline import FocusPipeline
    from tests.tiny_models import tiny_llava

    adapter = LlavaAdapter(*tiny_llava(seed=4), model_id="tiny")
    cfg = FocusConfig(proposal=ProposalConfig(k=8, s_min=1, s_max=1), rank=RankConfig(n_steps=1, overrun=False))
    service = FocusService(FocusPipeline(adapter, cfg), policy, image_cache_entries=2)
    image = write_png(root / "scene.png", (320, 240))
    first = service.zoom(image_path=str(image), target="red card").result.session
    second = service.zoom(image_path=str(image), target="blue card").result.session
    again = service.zoom(image_path=str(image), target="blue card").result.session
    other = service.zoom(image_path=str(write_png(root / "other.png", (200, 300))), target="blue card").result.session
    assert (first.reuse, first.prefill_tokens_saved) == ("none", 0)
    assert second.reuse == "encoded_image" and second.prefill_tokens_saved >= adapter.side**2
    assert again.reuse == "result" and again.cache_hit
    assert other.reuse == "none"


def test_image_cache_can_be_left_off(root: Path, policy: AgentPolicy) -> None:
    from focus_tool.adapters.llava import LlavaAdapter
    from focus_tool.pipeline import FocusPipeline
    from tests.tiny_models import tiny_llava

    adapter = LlavaAdapter(*tiny_llava(seed=4), model_id="tiny")
    FocusService(FocusPipeline(adapter), policy, image_cache_entries=0)
    assert adapter.image_cache is None


# ---------------------------------------------------------------- issue 17: no existence oracle, decode inside the slot


def test_outside_paths_get_one_refusal_whether_or_not_they_exist(root: Path, policy: AgentPolicy) -> None:
    """/etc/shadow and /etc/shadow_nope, a missing file behind '..' and one behind a symlinked folder: one message."""
    outside = root.parent / "elsewhere"
    outside.mkdir()
    write_png(outside / "real.png")
    (root / "door").symlink_to(outside)
    probes = {
        "/etc/shadow": "/etc/shadow_nope",
        str(root / ".." / "elsewhere" / "real.png"): str(root / ".." / "elsewhere" / "nope.png"),
        str(root / "door" / "real.png"): str(root / "door" / "nope.png"),
        "/" + "z" * 300 + "/a.png": "/" + "z" * 300 + "/b.png",  # ENAMETOOLONG outside: still just 'outside'
    }
    for existing, missing in probes.items():
        messages = []
        for raw in (existing, missing):
            with pytest.raises(InputRejected) as info:
                check_path(raw, policy)
            messages.append(str(info.value).replace(raw if len(raw) < 80 else raw[:80], "<path>"))
        assert "outside the allowed folders" in messages[0]
        assert messages[0].replace("real.png", "X").replace("shadow", "X").replace("a.png", "X") == messages[1].replace(
            "nope.png", "X"
        ).replace("shadow_nope", "X").replace("b.png", "X"), messages


def test_inside_a_root_missing_files_are_named(root: Path, policy: AgentPolicy) -> None:
    with pytest.raises(InputRejected, match=r"no such file: '.*missing\.png'; check the path"):
        check_path(str(root / "missing.png"), policy)
    with pytest.raises(InputRejected, match=r"(too long|cannot read|cannot resolve)") as info:
        check_path(str(root / ("n" * 300 + ".png")), policy)
    assert "chars)" in str(info.value) and "\n" not in str(info.value)


def test_images_are_decoded_only_inside_the_queue_slot(root: Path, policy: AgentPolicy, monkeypatch) -> None:
    """With one call running, a queued caller has not decoded its image yet (and a refusal needs no slot)."""
    import focus_tool.agent.service as service_mod

    decoded: list[str] = []
    real = service_mod.decode_image

    def spy(data: bytes, pol: AgentPolicy, *, what: str = "the image"):
        decoded.append(threading.current_thread().name)
        return real(data, pol, what=what)

    monkeypatch.setattr(service_mod, "decode_image", spy)
    release = threading.Event()

    class Slow(ScriptedEngine):
        def zoom(self, image, **kw):  # type: ignore[no-untyped-def]
            release.wait(5)
            return super().zoom(image, **kw)

    service = FocusService(Slow(), policy, reuse_results=False)
    payload = base64.b64encode((root / "scene.png").read_bytes()).decode()
    threads = [
        threading.Thread(target=service.zoom, kwargs={"image_base64": payload, "target": "cat"}, name=f"c{i}")
        for i in range(3)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while service.gate.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.gate.waiting == 2 and len(decoded) == 1  # two callers queued holding only bytes
    with pytest.raises(InputRejected, match="not a supported image"):  # header refusals do not queue
        service.zoom(image_base64=base64.b64encode(b"not an image" * 10).decode(), target="cat")
    release.set()
    for t in threads:
        t.join(5)
    assert len(decoded) == 3


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"max_waiting": -1}, "queue length must be >= 0"),
        ({"timeout_s": 0}, "finite number of seconds > 0"),
        ({"timeout_s": float("nan")}, "finite number of seconds > 0"),
        ({"timeout_s": float("inf")}, "finite number of seconds > 0"),
    ],
)
def test_gate_settings_are_refused_at_construction(kw: dict[str, float], fragment: str) -> None:
    from focus_tool.errors import ConfigError

    with pytest.raises(ConfigError, match=fragment) as info:
        InferenceGate(**kw)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)

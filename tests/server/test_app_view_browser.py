"""The result view (MCP App) in a real browser: Debian's headless Chromium driven by Selenium.

A host page written by the test iframes the app (``app_html()``) with ``sandbox="allow-scripts"``, as MCP Apps hosts
do, answers ``ui/initialize``, sends the tool input and a tool result made by the real server on the embedded model
(in-memory ``Client`` that negotiated Apps), and records every message the app posts (``window.__calls``). The test
then reads the page: every region is drawn at its box times the displayed scale (within 2 px), the answer region is
marked, the map layer toggles, a region click posts the ``tools/call`` a host would forward (the test forwards it to
the server and the app shows the new result, with a way back), caller text stays text, nothing overflows at 400 px.

Needs ``/usr/bin/chromium``, ``/usr/bin/chromedriver`` (Debian: ``apt-get install chromium chromium-driver``) and
``selenium``; skipped with one line when one is missing, failed instead when ``FOCUS_REQUIRE_BROWSER=1`` (CI).
``FOCUS_WRITE_APP_SCREENSHOT=1`` also writes ``docs/images/focus_app_view.png`` (the app at 900 px, heat on).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.from_thread
import numpy as np
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from focus_tool.agent import AgentResult
from focus_tool.data import synthetic as syn
from focus_tool.result import ResultWarning
from focus_tool.view import VIEW_META_KEY, app_html, static_html, view_jpeg, view_payload
from mcp_server.server import create_server
from mcp_server.settings import ServerSettings

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO / "docs" / "images" / "focus_app_view.png"
DEMO_SEED = 2  # `focus demo --seed 2`: "What is the color of the dots on the purple card?", a confident answer
WAIT_S = 20.0
TOLERANCE_PX = 2.0
EVIL = 'Is it <script>alert(1)</script><img src=x onerror="document.documentElement.dataset.pwned=1"> red?'

pytestmark = pytest.mark.slow


def _missing() -> str:
    """Why the browser test cannot run here, or ''."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if why := _missing():
        if os.environ.get("FOCUS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FOCUS_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1100,1400",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class RealServer:
    """The MCP server on the embedded model behind an in-memory client that negotiated MCP Apps, called from sync
    code; ``call`` returns the CallToolResult in its wire form (what a host hands the app).
    """

    portal: anyio.from_thread.BlockingPortal
    client: Client
    image_path: Path
    question: str

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.portal.call(functools.partial(self.client.call_tool, name, arguments))
        assert not result.is_error, result.content
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    root = tmp_path_factory.mktemp("app-images")
    item = syn.sample_bench_item(np.random.default_rng([syn.DEMO_STREAM, DEMO_SEED]), "attribute")
    syn.render(item.scene).save(root / "demo.png")
    mcp = create_server(ServerSettings(allowed_roots=(root,), device="cpu"))  # the embedded model
    apps = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Client(mcp, extensions=[apps], raise_exceptions=True)) as client,
    ):
        yield RealServer(portal, client, root / "demo.png", item.question.text)


@pytest.fixture(scope="module")
def first(real_server: RealServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool input and the real result of one focus_zoom on the demo image."""
    args = {"image_path": str(real_server.image_path), "question": real_server.question}
    return args, real_server.call("focus_zoom", args)


HOST_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>test host</title>
<style>body { margin: 0; background: #ffffff; } iframe { border: 0; display: block; width: %(width)dpx;
 height: 900px; }</style></head>
<body><iframe id="app" sandbox="allow-scripts" src="app.html"></iframe>
<script>
window.__calls = [];
window.__initialized = false;
const frame = document.getElementById("app");
window.__send = (msg) => frame.contentWindow.postMessage(msg, "*");
window.addEventListener("message", (event) => {
  if (event.source !== frame.contentWindow) return;
  const msg = event.data;
  window.__calls.push(msg);
  if (msg.method === "ui/initialize" && msg.id !== undefined) {
    window.__send({jsonrpc: "2.0", id: msg.id, result: {protocolVersion: "2026-01-26",
      hostInfo: {name: "focus-test-host", version: "1"}, hostCapabilities: {serverTools: {}},
      hostContext: {theme: "light", displayMode: "inline"}}});
  } else if (msg.method === "ui/notifications/initialized") {
    window.__initialized = true;
  } else if (msg.method === "ui/notifications/size-changed") {
    frame.style.height = Math.ceil(msg.params.height) + "px";
  }
});
</script></body></html>
"""

# Every visible region button and answer frame: id, rectangle relative to the displayed image, answer mark.
READ_BOXES = """
const img = document.getElementById("view-image").getBoundingClientRect();
const out = [];
for (const el of document.querySelectorAll("[data-region-id], [data-answer]")) {
  if (el.hidden || el.closest("[hidden]")) continue;
  const r = el.getBoundingClientRect();
  out.push({id: el.dataset.regionId || null, answer: el.dataset.answer === "true",
            answerBox: el.dataset.answerBox || null,
            x0: r.left - img.left, y0: r.top - img.top, x1: r.right - img.left, y1: r.bottom - img.top});
}
return {width: img.width, height: img.height, boxes: out};
"""
IMAGE_LOADED = "const i = document.getElementById('view-image'); return i.complete && i.naturalWidth > 0;"
# The heat canvas's computed opacity with the slider at its minimum, then at its maximum (as a user drags it).
SLIDE_OPACITY = """
const slider = document.getElementById("heat-opacity");
const seen = [];
for (const v of [slider.min, slider.max, "45"]) {
  slider.value = v;
  slider.dispatchEvent(new Event("input", {bubbles: true}));
  seen.push(Number(getComputedStyle(document.getElementById("heat")).opacity));
}
return seen.slice(0, 2);
"""
# A region whose centre shows that region on top (so a real click there reaches it), or null.
CLICKABLE_REGION = """
const img = document.getElementById("view-image").getBoundingClientRect();
for (const el of document.querySelectorAll("[data-region-id]")) {
  if (el.hidden) continue;
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  if (x < img.left || y < img.top || x > img.right || y > img.bottom) continue;
  const hit = document.elementFromPoint(x, y);
  if (hit && hit.closest("[data-region-id]") === el) return el.dataset.regionId;
}
return null;
"""
# What sticks out of the frame horizontally. Region tags may stick out of the image: #frame clips them (overflow:
# hidden), so they are not counted.
OVERFLOWING = """
const w = document.documentElement.clientWidth;
const out = [];
if (document.documentElement.scrollWidth > w) out.push("document " + document.documentElement.scrollWidth);
for (const el of document.querySelectorAll("body *")) {
  if (el.closest("[hidden]") || el.closest(".tag")) continue;
  const r = el.getBoundingClientRect();
  if (r.width > 0 && (r.right > w + 0.5 || r.left < -0.5)) {
    out.push((el.id || el.className || el.tagName) + " " + r.left + ".." + r.right);
  }
}
return out;
"""


def _wait(driver: WebDriver, what: str, ready: Callable[[WebDriver], Any]) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(ready, message=f"waited {WAIT_S:g} s for {what}")


def _open_host(driver: WebDriver, folder: Path, width: int = 1000) -> WebElement:
    """Load a fresh host page with the app iframed; wait for the app's handshake. Leaves the driver on the host."""
    from selenium.webdriver.common.by import By

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.html").write_text(app_html(), encoding="utf-8")
    (folder / "host.html").write_text(HOST_PAGE % {"width": width}, encoding="utf-8")
    driver.switch_to.default_content()
    driver.get((folder / "host.html").as_uri())
    _wait(driver, "ui/notifications/initialized", lambda d: d.execute_script("return window.__initialized"))
    return driver.find_element(By.ID, "app")


def _send(driver: WebDriver, message: dict[str, Any]) -> None:
    driver.switch_to.default_content()
    driver.execute_script("window.__send(arguments[0])", message)


def _show(driver: WebDriver, frame: WebElement, args: dict[str, Any], result: dict[str, Any]) -> None:
    """Send the tool input and result as a host does; wait (inside the frame) until the app has drawn them."""
    _send(driver, {"jsonrpc": "2.0", "method": "ui/notifications/tool-input", "params": {"arguments": args}})
    _send(driver, {"jsonrpc": "2.0", "method": "ui/notifications/tool-result", "params": result})
    driver.switch_to.frame(frame)
    _wait_drawn(driver, result["_meta"][VIEW_META_KEY])


def _drawn_ids(driver: WebDriver) -> list[str]:
    return list(
        driver.execute_script("return [...document.querySelectorAll('[data-region-id]')].map(e => e.dataset.regionId)")
    )


def _wait_drawn(driver: WebDriver, payload: dict[str, Any]) -> None:
    ids = sorted(r["id"] for r in payload["result"]["regions"])
    _wait(driver, f"regions {ids}", lambda d: sorted(_drawn_ids(d)) == ids)
    _wait(
        driver,
        "the image to load",
        lambda d: d.execute_script(IMAGE_LOADED),
    )


def _check_geometry(driver: WebDriver, payload: dict[str, Any]) -> dict[str, Any]:
    """Every drawn box is its image-pixel box times the displayed scale, within 2 px; the answer marks are right."""
    seen = driver.execute_script(READ_BOXES)
    w, h = payload["image_wh"]
    sx, sy = seen["width"] / w, seen["height"] / h
    assert seen["width"] > 100 and abs(sx - sy) < 0.01, seen
    result = payload["result"]
    boxes = {r["id"]: r["box"] for r in result["regions"]}
    used = {r["id"] for r in result["regions"] if r["selected"]}
    answer_boxes = [list(b) for b in result.get("answer_boxes") or []]
    drawn = [b for b in seen["boxes"] if b["id"] is not None]
    assert drawn, seen
    for b in seen["boxes"]:
        box = boxes[b["id"]] if b["id"] is not None else [int(v) for v in b["answerBox"].split(",")]
        want = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        got = (b["x0"], b["y0"], b["x1"], b["y1"])
        assert all(abs(g - e) <= TOLERANCE_PX for g, e in zip(got, want, strict=True)), (b, box, want)
        if b["id"] is not None:
            assert b["answer"] == (b["id"] in used or box in answer_boxes), b
    marked = {b["id"] for b in seen["boxes"] if b["answer"]}
    assert used <= marked, (used, marked)  # every region the answer used is drawn and marked
    return seen


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.execute_script("return document.getElementById(arguments[0]).textContent", element_id))


def _heat_shown(driver: WebDriver) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "heat").is_displayed()


def test_the_app_draws_a_real_result_and_zooms_on_a_click(
    browser: WebDriver, real_server: RealServer, first: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    args, result = first
    payload = result["_meta"][VIEW_META_KEY]
    answer = payload["result"]
    assert answer["answer"] and any(r["selected"] for r in answer["regions"]), answer  # a real, answered result
    frame = _open_host(browser, tmp_path / "host")
    calls = browser.execute_script("return window.__calls")
    init = next(c for c in calls if c.get("method") == "ui/initialize")
    assert init["params"]["protocolVersion"] == "2026-01-26" and init["params"]["appInfo"]["name"]
    _show(browser, frame, args, result)

    assert browser.execute_script("return document.body.dataset.mode") == "app"
    _check_geometry(browser, payload)
    assert _text(browser, "question") == answer["question"]
    assert _text(browser, "answer") == answer["answer"]
    assert f"{answer['answer_evidence']['confidence']:.2f}" in _text(browser, "confidence")
    assert "answered on region" in _text(browser, "status")
    for warning in answer["status"]["warnings"]:
        assert warning["message"] in _text(browser, "warnings")

    # The map layer: shown, hidden and shown again by its toggle; the slider sets its opacity.
    toggle = browser.find_element(By.ID, "heat-toggle")
    assert toggle.is_selected() and _heat_shown(browser)
    toggle.click()
    assert not toggle.is_selected() and not _heat_shown(browser)
    toggle.click()
    assert toggle.is_selected() and _heat_shown(browser)
    opacity = browser.execute_script(SLIDE_OPACITY)
    assert opacity == [0.0, 1.0], opacity

    # Unscored regions (hidden by default) are drawn where they belong too, once shown.
    unscored = browser.find_element(By.ID, "unscored-toggle")
    unscored.click()
    assert len(_check_geometry(browser, payload)["boxes"]) >= len(answer["regions"])
    unscored.click()

    # A click on a region (one its centre shows on top) posts tools/call with its region_id and the tool input.
    rid = browser.execute_script(CLICKABLE_REGION)
    assert rid, "no region is clickable at its centre"
    region = browser.find_element(By.CSS_SELECTOR, f'[data-region-id="{rid}"]')
    ActionChains(browser).move_to_element(region).click().perform()
    browser.switch_to.default_content()
    call = _wait(
        browser,
        "the app's tools/call",
        lambda d: next((c for c in d.execute_script("return window.__calls") if c.get("method") == "tools/call"), None),
    )
    assert call["jsonrpc"] == "2.0" and call["id"] is not None
    assert call["params"] == {"name": "focus_zoom", "arguments": {**args, "region_id": rid}}, call

    # The host forwards it to the server and hands the app the response: the zoomed result is drawn, Back returns.
    zoomed = real_server.call(call["params"]["name"], call["params"]["arguments"])
    inner = zoomed["_meta"][VIEW_META_KEY]
    assert inner["result"]["session"]["parent_region_id"] == rid
    _send(browser, {"jsonrpc": "2.0", "id": call["id"], "result": zoomed})
    browser.switch_to.frame(frame)
    _wait_drawn(browser, inner)
    _check_geometry(browser, inner)
    back = browser.find_element(By.ID, "back")
    assert back.is_displayed()
    back.click()
    _wait_drawn(browser, payload)
    _check_geometry(browser, payload)
    assert _text(browser, "question") == answer["question"] and not back.is_displayed()


@pytest.mark.skipif(
    os.environ.get("FOCUS_WRITE_APP_SCREENSHOT") != "1", reason="FOCUS_WRITE_APP_SCREENSHOT=1 writes it"
)
def test_write_the_screenshot_for_the_docs(
    browser: WebDriver, first: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    """docs/images/focus_app_view.png: the app at 900 px wide with the real result, heat on."""
    from PIL import Image

    args, result = first
    frame = _open_host(browser, tmp_path / "host", width=900)
    _show(browser, frame, args, result)
    assert _heat_shown(browser)
    browser.switch_to.default_content()
    _wait(browser, "the frame to fit the app", lambda d: frame.size["height"] > 600)
    browser.set_window_size(1100, frame.size["height"] + 200)
    try:
        assert frame.screenshot(str(tmp_path / "app.png"))
    finally:
        browser.set_window_size(1100, 1400)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(tmp_path / "app.png") as shot:
        shot.convert("RGB").save(SCREENSHOT, optimize=True)  # full colour: the rank colours must stay exact


def test_caller_text_is_shown_as_text(
    browser: WebDriver, first: tuple[dict[str, Any], dict[str, Any]], real_server: RealServer, tmp_path: Path
) -> None:
    """A question, answer and warning carrying markup are drawn as text, in the app and in the static page."""
    from PIL import Image
    from selenium.common.exceptions import NoAlertPresentException

    args, result = first
    real = AgentResult.model_validate(result["structuredContent"])
    assert real.status is not None
    warnings = [*real.status.warnings, ResultWarning(code="low_confidence", message=EVIL)]
    evil = real.model_copy(
        update={
            "question": EVIL,
            "answer": EVIL,
            "status": real.status.model_copy(update={"warnings": warnings}),
        }
    )
    with Image.open(real_server.image_path) as image:
        image.load()
        payload = view_payload(view_jpeg(image), evil)
        page = static_html(image, evil)
    forged = {"content": [{"type": "text", "text": "{}"}], "_meta": {VIEW_META_KEY: payload}}

    def check(mode: str) -> None:
        assert browser.execute_script("return document.body.dataset.mode") == mode
        for element_id in ("question", "answer"):
            assert _text(browser, element_id) == EVIL
            assert (
                browser.execute_script("return document.getElementById(arguments[0]).children.length", element_id) == 0
            )
        assert EVIL in _text(browser, "warnings")
        assert browser.execute_script("return document.documentElement.dataset.pwned") is None
        assert browser.execute_script("return document.querySelectorAll('script').length") == scripts[mode]
        assert browser.execute_script("return document.querySelectorAll('img').length") == 1  # #view-image only
        _check_geometry(browser, payload)

    assert "<script>alert" not in page  # the payload element escapes markup (JSON unicode escapes)
    scripts = {"app": app_html().count("<script"), "static": app_html().count("<script") + 1}  # + the payload element
    frame = _open_host(browser, tmp_path / "host")
    _show(browser, frame, {**args, "question": EVIL}, forged)
    check("app")

    (tmp_path / "static.html").write_text(page, encoding="utf-8")
    browser.switch_to.default_content()
    browser.get((tmp_path / "static.html").as_uri())  # top level, no sandbox: an alert would really open
    _wait_drawn(browser, payload)
    check("static")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def test_nothing_overflows_at_400_px(
    browser: WebDriver, first: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    args, result = first
    frame = _open_host(browser, tmp_path / "host", width=400)
    _show(browser, frame, args, result)
    seen = _check_geometry(browser, result["_meta"][VIEW_META_KEY])
    assert seen["width"] <= 400
    wide = browser.execute_script(OVERFLOWING)
    assert wide == [], wide

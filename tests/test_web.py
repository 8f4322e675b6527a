"""The web page in a real headless browser (Debian's chromium driven by Playwright, no browser
download): the archive shows, a search shows moments grouped by video, clicking a moment plays
that video from there, an ask shows its keyframe strip; a screenshot is kept in the test's folder."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from conftest import served
from tspo_edge.models.mllm import load_answerer
from tspo_edge.pipeline import index_videos
from tspo_edge.serving.app import create_app
from tspo_edge.storage.store import Store

CHROMIUM = os.environ.get("TSPO_EDGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")


def wait_js(page, expression: str, timeout: float = 30000) -> None:
    """Wait until `expression` is true in the page. Polled with page.evaluate (the DevTools
    protocol), since Playwright's wait_for_function evaluates a string in the page, which the
    page's Content-Security-Policy (no eval) rightly refuses."""
    end = time.monotonic() + timeout / 1000
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < end, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)


@pytest.fixture(scope="module")
def server(tmp_path_factory, lite_models, lite_encoder, real_clips):
    root = tmp_path_factory.mktemp("web")
    paths = []
    for name in ("bikes", "bigbuckbunny"):
        p = root / f"{name}.mp4"
        shutil.copy(real_clips[name], p)
        paths.append(p)
    with Store(root / "index.db") as store:
        assert all(r.status == "indexed" for r in index_videos(store, paths, lite_models()))
    app = create_app(root / "index.db", lite_models(), load_answerer("lite", encoder=lite_encoder))
    with served(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def test_search_click_a_moment_and_ask(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the page works under its own CSP: nothing it does is refused (a refusal is logged to the console)
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server + "/")
    # the archive: a card per indexed video, with its thumbnail loaded
    page.wait_for_selector("#archive .card img")
    cards = page.locator("#archive .card")
    assert cards.count() == 2
    assert sorted(cards.locator(".name").all_inner_texts()) == ["bigbuckbunny.mp4", "bikes.mp4"]
    wait_js(page, "[...document.querySelectorAll('#archive img')].every(i => i.complete && i.naturalWidth > 0)")

    # search: moments grouped by video, the best video first
    page.fill("#q", "a cartoon rabbit")
    page.click("#search-form button")
    page.wait_for_selector("#results .group .moment")
    groups = page.locator("#results .group")
    assert groups.count() >= 1
    assert groups.first.locator(".name").inner_text() == "bigbuckbunny.mp4"
    first = groups.first.locator(".moment").first
    ts = first.locator(".ts").inner_text()
    assert ts.count(":") == 1
    wait_js(page, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")

    # clicking a moment plays that video from that time
    want_video, want_time = first.get_attribute("data-video"), float(first.get_attribute("data-time"))
    first.click()
    player = page.locator("#player")
    assert player.get_attribute("data-video") == want_video
    assert player.get_attribute("src") == f"/api/videos/{want_video}/file"
    wait_js(page, "document.querySelector('#player').readyState >= 1", timeout=20000)
    wait_js(page, f"Math.abs(document.querySelector('#player').currentTime - {want_time}) < 0.5")
    assert "bigbuckbunny.mp4" in page.locator("#now-playing").inner_text()

    # a second search, then a moment of the other video: the player switches video and time
    page.fill("#q", "people riding bicycles")
    page.click("#search-form button")
    wait_js(page, "document.querySelector('#results .group .name')?.textContent === 'bikes.mp4'")
    bikes = page.locator("#results .group").first.locator(".moment").last
    t2 = float(bikes.get_attribute("data-time"))
    bikes.click()
    wait_js(page, f"document.querySelector('#player').dataset.video === '{bikes.get_attribute('data-video')}'")
    wait_js(page, f"document.querySelector('#player').readyState >= 1 && "
                           f"Math.abs(document.querySelector('#player').currentTime - {t2}) < 0.5", timeout=20000)

    # ask: the keyframe strip, the answer and the timings
    page.select_option("#ask-video", label="bikes.mp4")
    page.fill("#ask-question", "What is shown?")
    page.fill("#ask-options", "cyclists\na cartoon rabbit\nfood")
    page.fill("#ask-frames", "4")
    page.click("#ask-form button")
    wait_js(page, "document.querySelectorAll('#keyframes .moment').length === 4", timeout=30000)
    wait_js(page, "[...document.querySelectorAll('#keyframes img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#answer").inner_text() == "A. cyclists"
    assert "not a language model" in page.locator("#answer-note").inner_text()  # said beside a lite answer
    assert "total" in page.locator("#timings").inner_text()
    assert page.locator("#error").inner_text() == ""

    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert not errors, errors
    page.close()


def test_errors_show_in_the_page(server, browser):
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#archive .card")
    page.fill("#ask-question", "x" * 10)
    page.fill("#ask-frames", "300")  # over the server's limit; the browser's max is bypassed below
    page.evaluate("document.querySelector('#ask-frames').removeAttribute('max')")
    page.click("#ask-form button")
    wait_js(page, "document.querySelector('#error').textContent.length > 0")
    assert "frames" in page.locator("#error").inner_text()
    page.close()


def test_the_api_page_works_offline_under_its_csp(server, browser):
    """/docs is bundled (no CDN): it lists the endpoints, and no request leaves the server."""
    page = browser.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(server + "/docs")
    wait_js(page, "document.querySelectorAll('#endpoints section').length >= 6")
    titles = page.locator("#endpoints h2").all_inner_texts()
    assert "POST /api/ask" in titles and "GET /api/search" in titles, titles
    assert all(u.startswith(server) for u in requests), requests
    assert not problems, problems
    page.close()

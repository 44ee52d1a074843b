"""The Live tab in a real headless Chromium: start watching a video under the data folders, see the frame with
its heatmap, the score chart and the event with its clip; a source outside the allowed folders is refused."""

from __future__ import annotations

import re

import pytest

from test_ui_browser import _shot, _table, browser, server  # noqa: F401 - the same server and browser fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def live_page(browser, server):  # noqa: F811
    url, _ = server
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_role("tab", name="Live").click()
    page.wait_for_selector("#live-start")
    yield page
    context.close()


def test_live_tab_watches_a_video_and_shows_events(live_page, server):  # noqa: F811
    page, (_, workspace) = live_page, server
    page.wait_for_function("document.querySelector('#live-model input') && document.querySelector('#live-model input').value !== ''")
    video = sorted((workspace.video_category / "test").glob("*/*.mp4"))[0]
    page.locator("#live-source textarea, #live-source input").first.fill(str(video))
    page.locator("#live-start").click()
    page.locator("#live-status").get_by_text("frames scored").wait_for()
    page.wait_for_selector("#live-frame img")
    # the image model was trained on other parts: the conveyor is an anomaly from the first frame on
    page.locator("#live-status").get_by_text("Stopped").wait_for()
    rows = _table(page, "#live-events")
    assert rows and rows[0][0] == "1" and float(rows[0][5]) > 0.5
    assert re.fullmatch(r"\d+; largest \d+x\d+ px at x \d+, y \d+", rows[0][8]), rows[0]  # where, in the frame's pixels
    page.wait_for_selector("#live-clip video")
    _shot(page, "7_live_tab")


def test_live_tab_refuses_a_source_outside_the_data_folders(live_page):
    page = live_page
    page.locator("#live-source textarea, #live-source input").first.fill("/etc")
    page.locator("#live-start").click()
    page.locator("#live-status").get_by_text("outside the allowed data folders").wait_for()
    page.locator("#live-source textarea, #live-source input").first.fill("rtsp://10.0.0.1/cam")
    page.locator("#live-start").click()
    page.locator("#live-status").get_by_text("not allowed on this server").wait_for()

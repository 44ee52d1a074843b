"""End to end in a real headless Chromium: the page as an inspector uses it. Screenshots go to test-artifacts/.

Needs Debian's chromium at /usr/bin/chromium (``make test`` installs it where it can); skips with a reason
otherwise. The server runs in-process on a free port with tiny models trained once per session.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from _ui_models import ui_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 120_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; `make test` does it where it can)")
    pytest.importorskip("playwright.sync_api", reason="the Python playwright package is not installed")
    from anomalens.ui.app import launch

    workspace = ui_workspace(tmp_path_factory)
    port = _free_port()
    app = launch(workspace.settings, host="127.0.0.1", port=port, block=False)
    yield f"http://127.0.0.1:{port}/", workspace
    app.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, server):
    url, _ = server
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#inspect-button")
    page.wait_for_function("document.querySelector('#image-model input') && document.querySelector('#image-model input').value !== ''")
    yield page
    context.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


ROWS_JS = """rows => rows.map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))
                          .filter(cells => cells.length > 0)"""


def _table(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"{selector} [role=row]", ROWS_JS)


def test_upload_images_see_scores_heatmaps_and_relabel(page, server):
    _, workspace = server
    images = sorted((workspace.image_category / "test").glob("*/000.png"))
    page.locator("#image-files input[type=file]").set_input_files([str(p) for p in images])
    page.locator("#inspect-button").click()
    summary = page.locator("#image-summary")
    summary.get_by_text(re.compile(r"of \d+ images flagged")).wait_for()
    page.wait_for_function(f"document.querySelectorAll('#image-gallery img').length >= {len(images)}")
    rows = _table(page, "#image-table")
    assert len(rows) == len(images)
    assert all(row[3] in ("ANOMALOUS", "normal") for row in rows)
    assert all(0.0 <= float(row[2]) <= 1.0 for row in rows)
    _shot(page, "1_inspect_images")

    # move the threshold so that the top-scoring image changes its verdict; every verdict follows the
    # normalised scores already on the page (no rescoring)
    top = max(float(row[2]) for row in rows)
    threshold = 0.99 if top > 0.5 else max(0.01, int(top * 100) / 100 - 0.01)
    assert (top > 0.5) != (top > threshold), f"no threshold flips the top score {top}"
    number = page.locator("#threshold input[type=number]")
    number.fill(f"{threshold:.2f}")
    number.press("Enter")
    expected = [("ANOMALOUS" if float(row[2]) > threshold else "normal") for row in rows]
    page.wait_for_function(
        "expected => Array.from(document.querySelectorAll('#image-table [role=row]')).map(r => r.querySelectorAll('[role=gridcell]'))"
        ".filter(c => c.length > 0).map(c => c[3].innerText.trim()).join() === expected.join()",
        arg=expected,
    )
    assert f"at threshold {threshold:.2f}" in summary.inner_text()
    _shot(page, "2_inspect_threshold_moved")


def test_upload_video_plays_side_by_side_with_timeline(page, server):
    _, workspace = server
    page.get_by_role("tab", name="Analyse video").click()
    page.wait_for_function("document.querySelector('#video-model input') && document.querySelector('#video-model input').value !== ''")
    video = sorted((workspace.video_category / "test").glob("*/*.mp4"))[0]
    page.locator("#video-file input[type=file]").set_input_files(str(video))
    page.locator("#video-button").click()
    page.locator("#video-summary").get_by_text(re.compile(r"anomalous interval")).wait_for()
    player = page.locator("#video-player video")
    player.wait_for()
    assert ".mp4" in (player.get_attribute("src") or "")
    # the browser itself decodes it: metadata and a first frame, so the H.264 stream is playable here
    page.wait_for_function("document.querySelector('#video-player video').readyState >= 2")
    size = page.evaluate("(() => { const v = document.querySelector('#video-player video'); return [v.videoWidth, v.videoHeight, v.duration]; })()")
    assert size[0] > size[1] > 0 and size[2] > 0
    page.locator("#video-timeline img").wait_for()
    assert page.locator("#video-events").is_visible()
    _shot(page, "3_analyse_video")


def test_train_shows_progress_cancels_cleanly_and_lists_the_new_model(page, server):
    _, workspace = server
    chosen_for_inspection = page.locator("#image-model input").input_value()
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-folder textarea").fill("images/widget")
    page.locator("#train-model-type input").click()
    page.get_by_role("option", name="autoencoder").click()
    page.locator("#train-size textarea").fill("64")
    editor = page.locator("#train-advanced .cm-content")
    editor.wait_for()
    # the box fills with the chosen model's defaults when the choice reaches the server: type only after that, or
    # a late answer (on a busy machine) overwrites what was typed
    page.wait_for_function("document.querySelector('#train-advanced .cm-content').innerText.includes('latent_dim')")

    # a long run: progress appears, then Cancel stops it and keeps the best epoch so far
    editor.fill('{"epochs": 5000, "batch_size": 8, "latent_dim": 32, "patience": 0}')
    page.locator("#train-button").click()
    page.wait_for_function("document.body.innerText.match(/epoch [3-9]\\/5000/)")  # a few epochs done: one is kept
    _shot(page, "4_train_progress")
    page.locator("#cancel-button").click()
    status = page.locator("#train-status")
    status.get_by_text("Stopped.").wait_for()
    assert "best model so far was saved" in status.inner_text()
    _shot(page, "5_train_cancelled")

    # a short run: done, and the new model is offered in the Inspect view
    editor.fill('{"epochs": 2, "batch_size": 8, "latent_dim": 32}')
    page.locator("#train-button").click()
    status.get_by_text("Done.").wait_for()
    run_name = re.search(r"Trained (\S+)", status.inner_text()).group(1)
    assert (workspace.settings.results_dir / run_name / "model" / "config.json").is_file()
    table = [row[0] for row in _table(page, "#models-table")]
    assert run_name in table
    _shot(page, "6_train_done")
    page.get_by_role("tab", name="Inspect images").click()
    # the new model is offered, but the Inspect tab keeps the model chosen there (not silently the new one)
    assert page.locator("#image-model input").input_value() == chosen_for_inspection
    page.locator("#image-model input").click()
    options = page.get_by_role("option").all_inner_texts()
    assert sum("widget · autoencoder" in text for text in options) >= 3  # the workspace's, the cancelled one, the new one
    _shot(page, "7_model_list")


def test_inspect_examples_follow_the_model_and_errors_read_as_one_line(page, server):
    _, workspace = server
    # nothing to inspect: one clear line in the summary, no red "Error" badges on the other outputs
    page.locator("#inspect-button").click()
    page.locator("#image-summary").get_by_text("upload one or more images").wait_for()
    page.wait_for_timeout(500)
    assert page.get_by_text("Error", exact=True).count() == 0
    _shot(page, "09_inspect_nothing_uploaded")
    # the examples are the chosen model's own test images; "all" loads them, captions tell same-named files apart
    examples = page.locator("#image-examples")
    examples.get_by_text(re.compile(r"^good/000\.png$")).wait_for()
    examples.get_by_text(re.compile(r"^all \d+ examples$")).click()
    page.wait_for_function("document.querySelectorAll('#image-files .file-preview tr, #image-files tbody tr').length >= 3")
    page.locator("#inspect-button").click()
    page.locator("#image-summary").get_by_text(re.compile(r"of \d+ images flagged")).wait_for()
    page.wait_for_function("document.querySelectorAll('#image-gallery img').length >= 3")
    names = [row[0] for row in _table(page, "#image-table")]
    assert "good_000.png" in names and len(set(names)) == len(names)
    _shot(page, "10_inspect_examples_of_the_model")


def test_evaluate_tab_shows_tables_whole_and_the_hardest_cases(page, server):
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_function("document.querySelector('#eval-model input') && document.querySelector('#eval-model input').value !== ''")
    page.locator("#eval-button").click()
    page.locator("#eval-hardest img").wait_for()
    page.wait_for_function("document.querySelectorAll('#eval-types [role=row]').length > 1")
    # every column of the per-type table is inside the visible page at 1440 px
    right_edges = page.eval_on_selector_all("#eval-types [role=columnheader]", "cells => cells.map(c => c.getBoundingClientRect().right)")
    assert right_edges and max(right_edges) <= 1440
    _shot(page, "11_evaluate_image_model")


def test_train_tab_image_size_follows_the_model_kind(page):
    page.get_by_role("tab", name="Train").click()
    size = page.locator("#train-size textarea")
    assert size.get_attribute("placeholder") == "auto: the training images' aspect at about 256x256"
    region = page.locator("#train-score-region")  # patchcore: where its image score is taken, auto by default
    assert region.get_by_label("auto").is_checked() and region.get_by_label("image").is_visible()
    page.locator("#train-kind").get_by_text("video").click()
    page.wait_for_function("document.querySelector('#train-size textarea').placeholder === '240 360'")
    region.wait_for(state="hidden")  # video models have no such setting
    page.get_by_text("What these settings mean").click()
    page.locator("#train-settings-help").get_by_text(re.compile("motion_scale")).wait_for()
    _shot(page, "12_train_video_settings")


def test_help_tab(page):
    page.get_by_role("tab", name=re.compile("Help")).click()
    page.wait_for_timeout(500)
    _shot(page, "13_help")


def test_the_page_requests_nothing_but_its_own_server(browser, server):
    from urllib.parse import urlparse

    url, _ = server
    context = browser.new_context()
    page = context.new_page()
    hosts = set()
    page.on("request", lambda request: hosts.add(urlparse(request.url).hostname))
    page.goto(url)
    page.wait_for_selector("#inspect-button")
    page.wait_for_function("document.querySelector('#image-model input').value !== ''")  # the page's own calls are done
    page.wait_for_timeout(1000)  # fonts and late assets
    context.close()
    assert hosts == {"127.0.0.1"}


def test_a_path_outside_the_allowed_roots_is_refused(page):
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-folder textarea").fill("../../etc")
    page.locator("#check-button").click()
    status = page.locator("#train-status")
    status.get_by_text("outside the allowed data folders").wait_for()
    assert "Traceback" not in page.content()
    _shot(page, "8_path_refused")

"""The app in a real browser: every page draws without errors, links reopen a network, the sidebar drives the page.

Run with `python -m pytest tests/e2e` (or `-m e2e`); full-page screenshots land in test-output/screenshots/.
Needs the playwright package and Debian's Chromium at /usr/bin/chromium; skipped without them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.e2e.browser import (
    GRAPHVIZ_NODES,
    LOAD_TIMEOUT_MS,
    MAIN_DATAFRAME,
    OUTPUT_DIR,
    PAGES,
    TITLE,
    TRAINING_DONE,
    AppPage,
    browser_unavailable,
    full_page_screenshot,
    new_page,
    open_page,
    run_lab_study,
    run_short_training,
    wait_for_app_idle,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

_reason = browser_unavailable()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.e2e

SCREENSHOTS = OUTPUT_DIR / "screenshots"
PAGE = {app_page.name: app_page for app_page in PAGES}
EXCEPTION = '[data-testid="stException"]'
ERROR_ALERT = '[data-testid="stAlert"]:has([data-testid="stAlertContentError"])'  # st.error; not info/warning
PLOTLY_CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'


@pytest.fixture
def page_errors(page: Page) -> list[str]:
    """Uncaught JavaScript errors on the page."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def visit(page: Page, app_url: str, name: str, query: str = "") -> AppPage:
    """Open a page of the app and wait until it has finished drawing."""
    app_page = PAGE[name]
    open_page(page, app_url, app_page, query)
    return app_page


def assert_no_errors(page: Page, page_errors: list[str], refused_requests: list[str]) -> None:
    exceptions = page.locator(EXCEPTION)
    assert exceptions.count() == 0, f"exception on the page: {exceptions.all_inner_texts()}"
    errors = page.locator(ERROR_ALERT)
    assert errors.count() == 0, f"st.error on the page: {errors.all_inner_texts()}"
    assert page_errors == [], f"JavaScript errors: {page_errors}"
    assert refused_requests == [], f"the page asked for hosts beyond 127.0.0.1: {refused_requests}"


def assert_title(page: Page, title: str) -> None:
    expect(page.locator(TITLE)).to_have_text(title, timeout=LOAD_TIMEOUT_MS)


def assert_metric(page: Page, label: str, value: str) -> None:
    metric = page.get_by_test_id("stMetric").filter(has_text=label)
    expect(metric.get_by_test_id("stMetricValue")).to_have_text(value)


def assert_graphviz_drawn(page: Page, *labels: str) -> None:
    nodes = page.locator(GRAPHVIZ_NODES)
    assert nodes.count() > 5, f"only {nodes.count()} Graphviz nodes drawn"
    chart = page.get_by_test_id("stGraphVizChart").first
    for label in labels:
        expect(chart).to_contain_text(label)


def screenshot(page: Page, app_page: AppPage) -> None:
    full_page_screenshot(page, SCREENSHOTS / f"{app_page.name}.png", app_page)


def choose_preset(page: Page, name: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text="Preset").click()
    page.get_by_role("option", name=name, exact=True).click()


# -- every page --------------------------------------------------------------------------------------------------------

def test_overview_shows_resnet20_with_its_stage_diagram(page: Page, app_url: str, page_errors: list[str],
                                                         refused_requests: list[str]) -> None:
    overview = visit(page, app_url, "overview")
    assert_title(page, "resnet20 · ResNet-20")
    assert_metric(page, "Parameters", "272,474")
    assert_graphviz_drawn(page, "stage 1 (layer1)", "avg pool 8×8", "fc 64→10")
    expect(page.locator(PLOTLY_CHART)).to_have_count(1)
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, overview)


def test_layers_fills_the_table(page: Page, app_url: str, page_errors: list[str],
                                refused_requests: list[str]) -> None:
    layers = visit(page, app_url, "layers")
    assert_title(page, "Layers")
    expect(page.locator(MAIN_DATAFRAME)).to_be_visible()
    expect(page.get_by_text("88 of 88 rows shown.")).to_be_visible()
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, layers)


def test_diagram_draws_the_block_diagram(page: Page, app_url: str, page_errors: list[str],
                                         refused_requests: list[str]) -> None:
    diagram = visit(page, app_url, "diagram")
    assert_title(page, "Diagram")
    assert_graphviz_drawn(page, "conv 3×3, 32, /2", "layer1.0 – layer1.2", "avg pool 8×8", "fc 64→10")
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, diagram)


def test_compare_draws_its_charts(page: Page, app_url: str, page_errors: list[str],
                                  refused_requests: list[str]) -> None:
    compare = visit(page, app_url, "compare")
    assert_title(page, "Compare")
    charts = page.locator(PLOTLY_CHART)
    expect(charts.first).to_be_visible()
    expect(charts.first.locator("g.trace").first).to_be_attached()
    expect(page.locator(MAIN_DATAFRAME).first).to_contain_text("resnet110")
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, compare)


def test_train_runs_in_the_background_and_shows_the_result(page: Page, app_url: str, page_errors: list[str],
                                                          refused_requests: list[str]) -> None:
    train = visit(page, app_url, "train", "?name=resnet20&widths=8,16&blocks=1,1&strides=1,2")
    assert_title(page, "Train")
    run_short_training(page)
    expect(page.locator(TRAINING_DONE)).to_contain_text("Validation accuracy")
    expect(page.locator(MAIN_DATAFRAME).first).to_be_visible()  # the per-class table (the shipped ones' follows)
    expect(page.get_by_role("button", name="PT").first).to_be_visible()  # the checkpoint download
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, train)


def test_a_reloaded_page_finds_its_training_again_and_nobody_else_sees_it(
        page: Page, browser: Browser, app_url: str, page_errors: list[str], refused_requests: list[str]) -> None:
    visit(page, app_url, "train", "?name=resnet20&widths=8,16&blocks=1,1&strides=1,2")
    for label, value in (("Epochs", "500"), ("Batch size (0: auto)", "32"), ("Images per class (0: all)", "100")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Start training").click()
    stop = page.locator('[data-testid="stMain"]').get_by_role("button", name="Stop")
    stop.wait_for(timeout=LOAD_TIMEOUT_MS)
    assert "resnet_viz_owner" in [c["name"] for c in page.context.cookies()]
    page.reload()
    stop.wait_for(timeout=LOAD_TIMEOUT_MS)  # the same browser, a new session: its run is found again
    with new_page(browser) as stranger:
        visit(stranger, app_url, "train")
        expect(stranger.get_by_text("Set the run up above and start it")).to_be_visible()
    stop.click()
    page.locator(TRAINING_DONE).wait_for(timeout=LOAD_TIMEOUT_MS)
    expect(page.locator(TRAINING_DONE)).to_contain_text("ended by stop request")
    assert_no_errors(page, page_errors, refused_requests)


def test_quantize_opens_ready_for_a_study(page: Page, app_url: str, page_errors: list[str],
                                         refused_requests: list[str]) -> None:
    quantize = visit(page, app_url, "quantize")
    assert_title(page, "Quantize")
    expect(page.get_by_text("Pick a trained network and a study above.")).to_be_visible()
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, quantize)


def test_inside_opens_the_shipped_resnet20_on_a_sample_image(page: Page, app_url: str, page_errors: list[str],
                                                             refused_requests: list[str]) -> None:
    inside = visit(page, app_url, "inside")
    assert_title(page, "Inside")
    expect(page.get_by_text("True class: cat")).to_be_visible()
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"] img').count() >= 6
    expect(page.locator(PLOTLY_CHART)).to_have_count(2)  # the prediction and the ratio over the blocks
    assert_graphviz_drawn(page, "layer3.2")
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, inside)


def test_the_lab_draws_gradients_at_initialisation_plain_against_residual(
        page: Page, app_url: str, page_errors: list[str], refused_requests: list[str]) -> None:
    lab = visit(page, app_url, "lab")
    assert_title(page, "Lab")
    run_lab_study(page, "Gradients at initialisation (He et al. 2016, Sec. 4.2; Balduzzi et al. 2017)")
    expect(page.locator(PLOTLY_CHART)).to_have_count(1)
    expect(page.get_by_text("plain110: ‖∂L/∂W‖")).to_be_visible()
    assert_no_errors(page, page_errors, refused_requests)
    screenshot(page, lab)


# -- the config in the URL and the sidebar --------------------------------------------------------------------------

def test_a_link_reopens_its_network(page: Page, app_url: str, page_errors: list[str],
                                    refused_requests: list[str]) -> None:
    visit(page, app_url, "overview", "?name=resnet56&blocks=9,9,9")
    assert_title(page, "resnet56 · ResNet-56")
    assert_metric(page, "Parameters", "855,770")
    expect(page).to_have_url(re.compile(r"[?&]blocks=9(%2C|,)9(%2C|,)9(&|$)"))
    assert_no_errors(page, page_errors, refused_requests)


def test_a_preset_picked_in_the_sidebar_updates_the_page_and_the_url(
        page: Page, app_url: str, page_errors: list[str], refused_requests: list[str]) -> None:
    visit(page, app_url, "overview")
    choose_preset(page, "resnet50")
    assert_title(page, "resnet50 · ResNet-50")
    wait_for_app_idle(page)
    expect(page).to_have_url(re.compile(r"[?&]name=resnet50(&|$)"))
    expect(page).to_have_url(re.compile(r"[?&]block=bottleneck(&|$)"))
    assert_metric(page, "Parameters", "25,557,032")
    assert_graphviz_drawn(page, "fc 2048→1000")
    assert_no_errors(page, page_errors, refused_requests)


def test_a_broken_link_shows_an_error_and_resnet20(page: Page, app_url: str) -> None:
    visit(page, app_url, "overview", "?widths=16,x")
    expect(page.locator(ERROR_ALERT)).to_contain_text("could not be opened")
    assert_title(page, "resnet20 · ResNet-20")


# -- uploads on the Inside page ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, data, message", [
    ("notes.png", b"these are not pixels", "Notes.png is not a PNG, JPEG or WebP image that can be read."),
    ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(6 * 1024 * 1024),
     "Huge.png is 6.00 MiB, over the limit of 5.00 MiB (RESNET_VIZ_IMAGE_BYTES)"),
])
def test_a_bad_image_upload_is_one_sentence_and_the_page_stays_up(name, data, message, page: Page, app_url: str,
                                                                  page_errors: list[str]) -> None:
    visit(page, app_url, "inside")
    page.get_by_test_id("stSelectbox").filter(has_text="Image").click()
    page.keyboard.type("upload an")  # the list of 101 is drawn a screenful at a time: filter it
    page.get_by_role("option", name="upload an image", exact=True).click()
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": "image/png", "buffer": data})
    error = page.locator(ERROR_ALERT)
    expect(error).to_contain_text(message, timeout=LOAD_TIMEOUT_MS)
    assert error.count() == 1 and page.locator(EXCEPTION).count() == 0 and page_errors == []
    expect(page.locator(TITLE)).to_have_text("Inside")

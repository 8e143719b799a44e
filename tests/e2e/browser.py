"""Helpers shared by the browser tests and scripts/screenshots.py: start the app, launch Chromium, wait for a page.

Everything stays on 127.0.0.1: the app listens on a free loopback port, Chromium runs with the options that
keep it from calling home, and a page's requests to any other host are refused.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = REPO_ROOT / "test-output"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
STARTUP_TIMEOUT_S = 120.0
LOAD_TIMEOUT_MS = 90_000  # the first run of a page imports torch and traces the network: slow on 2 cores

# What Streamlit 1.67 renders (see its frontend bundle): the app root carries the script's run state,
# element containers are marked stale while a rerun replaces them, and the charts draw after the run ends.
SCRIPT_DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
RUNNING_ICON = '[data-testid="stStatusWidgetRunningIcon"]'
STALE = '[data-testid="stElementContainer"][data-stale="true"]'
TITLE = '[data-testid="stMain"] h1'
GRAPHVIZ_NODES = '[data-testid="stGraphVizChart"] svg g.node'
PLOTLY_DRAWN = '[data-testid="stPlotlyChart"] .js-plotly-plot .main-svg'
MAIN_DATAFRAME = '[data-testid="stMain"] [data-testid="stDataFrame"]'  # the sidebar's stage editor is one too
DATAFRAME_DRAWN = f"{MAIN_DATAFRAME} canvas"


@dataclass(frozen=True)
class AppPage:
    """One page of the app: its URL path, and what is on screen once it has finished drawing."""

    name: str
    path: str
    drawn: tuple[str, ...]


PAGES = (
    AppPage("overview", "/", (GRAPHVIZ_NODES, PLOTLY_DRAWN)),
    AppPage("layers", "/layers", (DATAFRAME_DRAWN,)),
    AppPage("diagram", "/diagram", (GRAPHVIZ_NODES,)),
    AppPage("compare", "/compare", (DATAFRAME_DRAWN, PLOTLY_DRAWN)),
    AppPage("train", "/train", ('[data-testid="stSidebar"] [data-testid="stDataFrame"] canvas',)),
    AppPage("quantize", "/quantize", ('[data-testid="stMain"] [data-testid="stAlertContentInfo"]',
                                      '[data-testid="stSidebar"] [data-testid="stDataFrame"] canvas')),
    AppPage("inside", "/inside", (PLOTLY_DRAWN, GRAPHVIZ_NODES, '[data-testid="stMain"] [data-testid="stImage"] img')),
    AppPage("lab", "/lab", ('[data-testid="stMain"] [data-testid="stAlertContentInfo"]',
                            '[data-testid="stMain"] [data-testid="stMultiSelect"]')),
)
TRAINING_DONE = '[data-testid="stAlertContentSuccess"]'


def run_lab_study(page: Page, study: str) -> None:
    """On the Lab page: pick a study by its title in the menu, run it, wait for its results, and scroll them into
    view."""
    box = page.get_by_test_id("stSelectbox").filter(has_text="Study")
    if study not in box.inner_text():
        box.scroll_into_view_if_needed()
        box.locator("input").click()
        box.locator("input").fill(study.split(" (")[0])
        page.get_by_role("option", name=study).click()
        page.wait_for_timeout(500)
    page.get_by_role("button", name="Run").click()
    results = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').filter(
        has_text=f"{study} ·")
    results.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.locator(PLOTLY_DRAWN).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    results.evaluate("caption => caption.scrollIntoView({block: 'start'})")


def run_short_training(page: Page) -> None:
    """On the Train page: a few quick epochs on synthetic data, then wait for the result."""
    for label, value in (("Epochs", "4"), ("Batch size (0: auto)", "32"), ("Peak learning rate (0: auto)", "0.05"),
                         ("Images per class (0: all)", "100")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Start training").click()
    page.locator(TRAINING_DONE).wait_for(timeout=LOAD_TIMEOUT_MS)
    page.locator(PLOTLY_DRAWN).first.wait_for(timeout=LOAD_TIMEOUT_MS)


class ServerError(RuntimeError):
    """The app did not come up; the message ends with the tail of its log."""


# -- the app ---------------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, address: str | None = "127.0.0.1") -> list[str]:
    """``streamlit run app.py`` on ``port``; ``address`` None: the address the app's own config gives."""
    where = ["--server.address", address] if address else []
    return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), *where,
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def is_healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(process: subprocess.Popen, base_url: str, log_path: Path,
                       timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"streamlit exited with code {process.returncode}; its log ends:\n{log_tail(log_path)}")
        if is_healthy(base_url):
            return
        time.sleep(0.25)
    raise ServerError(f"streamlit was not healthy after {timeout_s:.0f} s; its log ends:\n{log_tail(log_path)}")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


@contextmanager
def streamlit_server(log_path: Path, address: str | None = "127.0.0.1") -> Iterator[str]:
    """Run ``streamlit run app.py`` on a free loopback port (``address`` None: bound where the app's config
    says); yields its base URL and stops it on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(streamlit_command(port, address), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_until_healthy(process, base_url, log_path)
            yield base_url
        finally:
            stop(process)


# -- the browser -----------------------------------------------------------------------------------------------------

def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium)"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (Playwright's own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def is_loopback(url: str) -> bool:
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme in ("data", "blob", "about") or parsed.hostname in ("127.0.0.1", "localhost")


@contextmanager
def new_page(browser: Browser, refused: list[str] | None = None) -> Iterator[Page]:
    """A page in a fresh context (so a fresh app session); requests beyond loopback are refused and listed."""
    context = browser.new_context(viewport=VIEWPORT)

    def only_loopback(route: Route) -> None:
        if is_loopback(route.request.url):
            route.continue_()
        else:
            if refused is not None:
                refused.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", only_loopback)
    try:
        yield context.new_page()
    finally:
        context.close()


# -- waiting for the app ---------------------------------------------------------------------------------------------

def wait_for_app_idle(page: Page, timeout_ms: float = LOAD_TIMEOUT_MS) -> None:
    """Wait until the script has finished its run and nothing on screen is stale or marked as running."""
    page.wait_for_selector(SCRIPT_DONE, state="attached", timeout=timeout_ms)
    page.wait_for_function(
        "([running, stale]) => !document.querySelector(running) && !document.querySelector(stale)",
        arg=[RUNNING_ICON, STALE], timeout=timeout_ms, polling=100,
    )


def wait_until_drawn(page: Page, app_page: AppPage, timeout_ms: float = LOAD_TIMEOUT_MS) -> None:
    """Wait until the app is idle, the page's title is there, its charts and tables are drawn and fonts are in."""
    wait_for_app_idle(page, timeout_ms)
    page.wait_for_selector(TITLE, timeout=timeout_ms)
    for selector in app_page.drawn:
        page.locator(selector).first.wait_for(state="visible", timeout=timeout_ms)
    page.evaluate("document.fonts.ready.then(() => new Promise(r => requestAnimationFrame(() => r())))")


def open_page(page: Page, base_url: str, app_page: AppPage, query: str = "") -> None:
    page.goto(f"{base_url}{app_page.path}{query}")
    wait_until_drawn(page, app_page)


def scroll_height(page: Page) -> int:
    """The height that shows all of the page: Streamlit scrolls its main area and sidebar, not the document."""
    return page.evaluate(
        "() => Math.max(...['stMain', 'stSidebarContent'].map(id =>"
        " document.querySelector(`[data-testid='${id}']`)?.scrollHeight ?? 0), window.innerHeight)"
    )


def full_page_screenshot(page: Page, path: Path, app_page: AppPage) -> None:
    """Screenshot all of the page, by growing the viewport to its height (then restoring it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or VIEWPORT
    page.set_viewport_size({"width": size["width"], "height": scroll_height(page)})
    try:
        wait_until_drawn(page, app_page)  # the charts redraw at the new size
        page.wait_for_timeout(300)  # plotly's resize handler is debounced
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)

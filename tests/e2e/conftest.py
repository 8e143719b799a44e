"""Fixtures for the browser tests: one app server and one headless Chromium per module, a fresh page per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # so that `tests.e2e.browser` imports under any pytest invocation
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.browser import OUTPUT_DIR, browser_unavailable, chromium, new_page, streamlit_server  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def _skip_without_browser() -> None:
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The base URL of `streamlit run app.py` on a free loopback port; its log is test-output/streamlit-e2e.log."""
    _skip_without_browser()
    with streamlit_server(OUTPUT_DIR / "streamlit-e2e.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    _skip_without_browser()
    with chromium() as launched:
        yield launched


@pytest.fixture
def refused_requests() -> list[str]:
    """URLs the page asked for beyond 127.0.0.1 (all refused)."""
    return []


@pytest.fixture
def page(browser: Browser, refused_requests: list[str]) -> Iterator[Page]:
    """A page of its own (a new app session) in a 1400×1000 viewport."""
    with new_page(browser, refused_requests) as fresh:
        yield fresh

"""Load test of the app as served: how fast reruns and page changes come back with N browser sessions at once,
without and with a training job running in the same server.

    .venv/bin/python -m benchmarks.bench_serve [--sessions 1 4 8] [--seconds 45] [--port P] [--json PATH]

Starts its own ``streamlit run app.py`` on 127.0.0.1 (a free port, or ``--port``), waits for /_stcore/health, and
drives Debian's headless Chromium (/usr/bin/chromium) with Playwright: one browser, one context (so one app
session) a user. Every request stays on loopback; anything else a page asks for is refused and counted. The
server is always stopped at the end, also on Ctrl-C, an error or the overall time limit; its log is
test-output/streamlit-bench-serve.log.

For each N in ``--sessions``, two phases of ``--seconds`` each, in the same run:

- **anchor**: N sessions, nothing else running in the server;
- **training**: the same, while one training job runs in the server: an extra page opens the Train page, picks
  synthetic data and 500 epochs (a time budget of the phase plus two minutes stops it even if this script could
  not), starts it and waits for its first steps. After the phase it clicks Stop and waits until the run reports
  its result, so no job outlives its phase.

Before the first phase one session visits every page and does every action once, so that imports and the traces
of the few networks the sessions use are in the caches (first visits are what ``bench_app`` measures).

Each session starts on a page of its own and loops Overview → Layers → Diagram → Compare through the sidebar's
navigation links; on each page it steps the sidebar's Classes up and back down (two reruns, for a network the
server has seen before), and on Layers it also searches the table and clears the search. Between actions a
session waits ``--think`` seconds, as a person reads before the next click.

When an action is done. Streamlit's status widget is no signal on its own: it appears only some time into a run,
so it is also absent just after the click, before the run has started. The app root's ``data-test-script-state``
attribute can miss a run too, where the browser draws its start and its end at once. What cannot be missed is the
server's own message that a run has ended (a ForwardMsg with ``script_finished``): a script in each page reads the
top-level fields of every WebSocket message and counts those. An action is done when, after it, one more run of
the script has ended, the state is ``notRunning``, no element is left stale from the run before (Streamlit marks
what a run has not redrawn yet with ``data-stale``), no running icon shows, the URL has the page's path and the
page's charts and tables are in the document (the selectors the browser tests wait for). The page checks this on
every change of its DOM (and every 250 ms) and records the time itself, from the ``pointerdown`` or ``keydown``
of the action to the moment it holds: in the browser's own clock, with no polling delay and no round trip to this
script in it. A time so includes the browser's own drawing: what a person at that browser waits for.

Errors counted, per phase: actions not done within ``--action-timeout`` (the page is then reloaded and the
session goes on), a Streamlit exception (``stException``) or an ``st.error`` box on screen after an action (none
is expected in these steps), a page crash, console errors and uncaught JavaScript errors, requests refused for
leaving loopback, and, in the training phase, a job that did not stop.

Printed: the CPU header, then for each N and phase the actions, p50 and p95 of reruns and of page changes, the
errors and the server's resident memory (VmRSS of the streamlit process) at the start and the end of the phase;
each training phase's p50 and p95 against its anchor's; the share of both cores' time that went to the server,
to the browser (Chromium, Playwright's driver and this script) and to other processes; and the median of each
action on each page. Here the browsers share the CPU with the server, as they would not for people at their own
machines: read the times with the CPU shares beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the browser helpers live with the browser tests
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import machine  # noqa: E402
from tests.e2e.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    LOAD_TIMEOUT_MS,
    OUTPUT_DIR,
    PAGES,
    RUNNING_ICON,
    STALE,
    TITLE,
    TRAINING_DONE,
    VIEWPORT,
    ServerError,
    free_port,
    is_loopback,
    log_tail,
    stop,
    streamlit_command,
    wait_until_healthy,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Route

LOG = OUTPUT_DIR / "streamlit-bench-serve.log"
LOOP = ("overview", "layers", "diagram", "compare")  # the pages a session visits, in this order
PAGE = {app_page.name: app_page for app_page in PAGES}
TITLES = {"overview": "Overview", "layers": "Layers", "diagram": "Diagram", "compare": "Compare", "train": "Train"}
NAV_LINK = '[data-testid="stSidebarNavLink"]'
CLASSES = '[data-testid="stSidebar"] [data-testid="stNumberInput"]'
EXCEPTION = '[data-testid="stException"]'
ERROR_ALERT = '[data-testid="stAlert"]:has([data-testid="stAlertContentError"])'
MAIN_BUTTON = '[data-testid="stMain"] [data-testid="stButton"] button'
ENDED = '[data-testid="stMain"] [data-testid="stProgress"]:text-matches("^(finished|failed|stopped)")'
# Opened at /layers or /train, the frontend first looks for the server under that path (a 404) and then at /
BASE_PATH_PROBE = re.compile(r"/[a-z]+/_stcore/(health|host-config)$")
# hidden pages must keep their timers: the Train page polls every 2 s, and every session is a page in the background
BACKGROUND_ARGS = ["--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                   "--disable-backgrounding-occluded-windows"]
TRAIN_EPOCHS = 500  # synthetic data, 5,000 images an epoch: far more than a phase lasts
MAX_SESSIONS = 16
MAX_SECONDS = 600

# Runs in every page before the app's own scripts; see the module's docstring ("When an action is done"). It reads
# the top-level fields of each message the server sends (a ForwardMsg, protobuf): field 9 is session_status_changed
# (its field 2, script_is_running), field 6 script_finished, whose status 0 is a run of the whole script that ended,
# 1 one that did not compile, 2 one cut short by the next rerun and 3 a fragment's run.
PROBE = """
(() => {
  const b = window.__bench = {started: 0, finished: 0, armed: null, startAt: null, doneAt: null, found: null};
  const varints = (bytes, on) => {  // calls on(field, value) for varints and on(field, bytes) for the rest
    let i = 0;
    const varint = () => {
      let x = 0, k = 1, c;
      do { c = bytes[i++]; x += (c & 127) * k; k *= 128; } while (c & 128);
      return x;
    };
    while (i < bytes.length) {
      const tag = varint(), field = Math.floor(tag / 8), wire = tag % 8;
      if (wire === 0) on(field, varint());
      else if (wire === 2) { const n = varint(); on(field, bytes.subarray(i, i + n)); i += n; }
      else if (wire === 1 || wire === 5) i += wire === 1 ? 8 : 4;
      else return;
    }
  };
  const scan = (bytes) => varints(bytes, (field, value) => {
    if (field === 6 && (value === 0 || value === 1)) { b.finished += 1; setTimeout(check, 0); }
    if (field === 9) varints(value, (f, v) => { if (f === 2 && v === 1) b.started += 1; });
  });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        try { if (e.data instanceof ArrayBuffer) scan(new Uint8Array(e.data)); } catch (error) { /* not ours */ }
      });
    }
  };
  const state = () => document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state');
  const texts = (selector) => [...document.querySelectorAll(selector)].map(e => e.innerText.slice(0, 300));
  const ready = (a) => b.finished > a.finished && state() === 'notRunning' && location.pathname === a.path
      && !document.querySelector(a.stale) && !document.querySelector(a.running)
      && a.drawn.every(s => document.querySelector(s));
  const check = () => {
    const a = b.armed;
    if (a && b.startAt !== null && ready(a)) {
      b.doneAt = performance.now();
      b.found = {exceptions: texts(a.exception), alerts: texts(a.alert)};
      b.armed = null;
    }
  };
  const input = () => { if (b.armed && b.startAt === null) b.startAt = performance.now(); };
  addEventListener('pointerdown', input, true);
  addEventListener('keydown', input, true);
  new MutationObserver(check).observe(document, {subtree: true, childList: true, attributes: true});
  setInterval(check, 250);  // in case the last change left no trace in the DOM
  b.why = () => {
    const a = b.armed;
    if (!a) return 'not armed';
    return `input ${b.startAt !== null}, runs started ${b.started - a.started}, ended ${b.finished - a.finished},`
      + ` state ${state()}, path ${location.pathname}, stale ${document.querySelectorAll(a.stale).length},`
      + ` running icon ${!!document.querySelector(a.running)},`
      + ` missing [${a.drawn.filter(s => !document.querySelector(s))}], ready now ${ready(a)}`;
  };
  b.arm = (a) => {
    b.armed = {...a, started: b.started, finished: b.finished};
    b.startAt = null; b.doneAt = null; b.found = null;
  };
})();
"""
IDLE = """([stale, running, title]) => document.querySelector('[data-testid="stApp"]')
    ?.getAttribute('data-test-script-state') === 'notRunning' && !document.querySelector(stale)
    && !document.querySelector(running) && !!document.querySelector(title)"""


# -- figures -----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One action: what it was, on which page, and its milliseconds until the page showed the rerun's end."""

    action: str
    page: str
    ms: float

    @property
    def navigation(self) -> bool:
        return self.action == "navigation"


@dataclass
class Phase:
    """What one phase measured; times in milliseconds, memory in MiB."""

    sessions: int
    phase: str  # "anchor" or "training"
    samples: list[Sample] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    rss_start_mib: float = math.nan
    rss_end_mib: float = math.nan
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # shares of the machine's CPU time during the phase
    recording: bool = False  # while the phase's clock runs

    def times(self, navigation: bool) -> list[float]:
        """Milliseconds of the page changes or of the reruns."""
        return [x.ms for x in self.samples if x.navigation == navigation]

    def medians(self) -> dict[str, float]:
        """The median of each action on each page: where the time goes."""
        found: dict[str, list[float]] = {}
        for x in self.samples:
            found.setdefault(f"{x.action} on {x.page}", []).append(x.ms)
        return {key: statistics.median(values) for key, values in sorted(found.items())}

    def error(self, kind: str, message: str, always: bool = False) -> None:
        """Count an error while the phase records (``always``: after it too); keep the first few distinct
        messages for the report."""
        if not (self.recording or always):
            return
        self.errors[kind] += 1
        line = f"{kind}: {' '.join(message.split())[:300]}"
        if line not in self.messages and len(self.messages) < 12:
            self.messages.append(line)

    def summary(self) -> dict:
        """The figures, for --json and the table."""
        figures = {"sessions": self.sessions, "phase": self.phase, "seconds": round(self.seconds, 1),
                   "actions": len(self.samples), "reruns": len(self.times(False)),
                   "navigations": len(self.times(True))}
        for kind, navigation in (("rerun", False), ("navigation", True)):
            values = self.times(navigation)
            figures.update({f"{kind}_p50_ms": percentile(values, 50), f"{kind}_p95_ms": percentile(values, 95)})
        return {**figures, "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "error_messages": self.messages, "rss_start_mib": self.rss_start_mib, "rss_end_mib": self.rss_end_mib,
                "cpu_share": self.cpu, "median_ms_by_action": self.medians()}


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile, interpolated between the closest ranks (NaN without values): p95 of 20 actions is
    between the 19th and the 20th rather than the largest."""
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass(frozen=True)
class Ticks:
    """CPU time so far, in clock ticks: the machine's, busy and in all (/proc/stat, all cores), and each of this
    script's processes' (utime + stime, /proc/PID/stat)."""

    busy: int
    total: int
    processes: dict[int, int]  # pid → ticks, for this script, its descendants and the server

    @classmethod
    def now(cls) -> Ticks:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        stats = process_stats()
        mine = descendants(os.getpid(), {pid: ppid for pid, (ppid, _) in stats.items()}) | {os.getpid()}
        return cls(sum(fields) - idle, sum(fields), {pid: stats[pid][1] for pid in mine if pid in stats})


def process_stats() -> dict[int, tuple[int, int]]:
    """Every process's parent and CPU ticks (utime + stime)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):  # it ended meanwhile
            continue
    return found


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """The processes below ``root``, given each process's parent."""
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def cpu_shares(before: Ticks, after: Ticks, server: int) -> dict[str, float]:
    """Shares of all cores' time between two readings: the server (and anything it started), the browser (Chromium,
    Playwright's driver and this script) and everything else on the machine; a process that ended in between is
    not counted."""
    total = after.total - before.total
    if total <= 0:
        return {}
    parents = {pid: ppid for pid, (ppid, _) in process_stats().items()}
    in_server = descendants(server, parents) | {server}
    used = {pid: ticks - before.processes.get(pid, 0) for pid, ticks in after.processes.items()}
    server_ticks = sum(t for pid, t in used.items() if pid in in_server)
    browser_ticks = sum(t for pid, t in used.items() if pid not in in_server)
    busy = after.busy - before.busy
    return {"server": server_ticks / total, "browser": browser_ticks / total,
            "other": max(busy - server_ticks - browser_ticks, 0) / total, "machine_busy": busy / total}


def rss_mib(pid: int) -> float:
    """The resident memory of a process (VmRSS in /proc/PID/status), in MiB; NaN where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return math.nan


# -- one browser session -----------------------------------------------------------------------------------------------

@dataclass
class Session:
    """One user: a browser context (so an app session of its own) and its page, whose errors go to ``phase``."""

    context: BrowserContext
    page: Page
    phase: Phase
    name: str
    crashed: bool = False

    def watch(self, page: Page) -> None:
        """Count what goes wrong in the page: crashes, console errors, uncaught JavaScript errors."""
        def on_crash(_page: Page) -> None:
            self.crashed = True
            self.phase.error("crash", f"{self.name}: the page crashed", always=True)

        def on_console(message: ConsoleMessage) -> None:
            url = message.location.get("url", "")
            if message.type == "error" and not BASE_PATH_PROBE.search(url):
                self.phase.error("console", f"{self.name}: {message.text} ({url})")

        page.on("crash", on_crash)
        page.on("console", on_console)
        page.on("pageerror", lambda e: self.phase.error("javascript", f"{self.name}: {e}"))


async def open_session(browser: Browser, base_url: str, phase: Phase, name: str, path: str) -> Session:
    """A new context with the probe in it, its page opened at ``path`` and drawn; requests beyond loopback refused."""
    context = await browser.new_context(viewport=VIEWPORT)
    await context.add_init_script(PROBE)

    async def only_loopback(route: Route) -> None:
        if is_loopback(route.request.url):
            await route.continue_()
        else:
            phase.error("refused", f"{name}: {route.request.url}", always=True)
            await route.abort("blockedbyclient")

    await context.route("**/*", only_loopback)
    page = await context.new_page()
    session = Session(context, page, phase, name)
    session.watch(page)
    await load(session, base_url, path)
    return session


async def load(session: Session, base_url: str, path: str) -> None:
    """Open ``path`` afresh (a new page after a crash) and wait until the app has drawn it."""
    if session.crashed or session.page.is_closed():
        session.page = await session.context.new_page()
        session.watch(session.page)
        session.crashed = False
    page = session.page
    await page.goto(f"{base_url}{path}", timeout=LOAD_TIMEOUT_MS)
    await page.wait_for_function(IDLE, arg=[STALE, RUNNING_ICON, TITLE], timeout=LOAD_TIMEOUT_MS, polling=100)
    app_page = next((p for p in PAGES if p.path == path), None)
    for selector in app_page.drawn if app_page else ():
        await page.locator(selector).first.wait_for(state="attached", timeout=LOAD_TIMEOUT_MS)


async def timed(session: Session, path: str, drawn: tuple[str, ...], act, timeout_ms: float) -> float:
    """Arm the page's probe, run ``act`` (a click or a key press) and return the milliseconds the probe measured
    from its input to the rerun's end; errors found on screen then are counted."""
    page = session.page
    await page.evaluate("(a) => window.__bench.arm(a)", {"path": path, "drawn": list(drawn), "stale": STALE,
                                                          "running": RUNNING_ICON, "exception": EXCEPTION,
                                                          "alert": ERROR_ALERT})
    await act()
    await page.wait_for_function("() => window.__bench.doneAt !== null", timeout=timeout_ms, polling=100)
    result = await page.evaluate("() => ({ms: __bench.doneAt - __bench.startAt, ...__bench.found})")
    for text in result["exceptions"]:
        session.phase.error("exception", f"{session.name} on {path}: {text}")
    for text in result["alerts"]:
        session.phase.error("st.error", f"{session.name} on {path}: {text}")
    return result["ms"]


async def navigate(session: Session, name: str, timeout_ms: float) -> float:
    """Go to a page by its link in the sidebar's navigation."""
    app_page = PAGE[name]
    link = session.page.locator(NAV_LINK).filter(has_text=TITLES[name])
    return await timed(session, app_page.path, app_page.drawn, lambda: link.click(timeout=timeout_ms), timeout_ms)


async def step_classes(session: Session, name: str, direction: str, timeout_ms: float) -> float:
    """Step the sidebar's Classes up or down: a rerun of the page for a new network (in the caches after the
    first time)."""
    app_page = PAGE[name]
    button = session.page.locator(CLASSES).filter(has_text="Classes").get_by_test_id(f"stNumberInputStep{direction}")
    return await timed(session, app_page.path, app_page.drawn, lambda: button.click(timeout=timeout_ms), timeout_ms)


async def search_layers(session: Session, text: str, timeout_ms: float) -> float:
    """Type into the Layers page's search box and press Enter: a rerun that filters the table."""
    box = session.page.get_by_role("textbox", name="Search", exact=True)  # the table's toolbar has Search too
    await box.fill(text, timeout=timeout_ms)
    app_page = PAGE["layers"]

    async def press() -> None:
        await box.press("Enter", timeout=timeout_ms)

    return await timed(session, app_page.path, app_page.drawn, press, timeout_ms)


def actions_on(name: str) -> list[tuple[str, object]]:
    """The reruns done on a page, as (label, coroutine function of session and timeout)."""
    steps = [("classes up", lambda s, t: step_classes(s, name, "Up", t)),
             ("classes down", lambda s, t: step_classes(s, name, "Down", t))]
    if name == "layers":
        steps += [("search", lambda s, t: search_layers(s, "conv", t)),
                  ("clear search", lambda s, t: search_layers(s, "", t))]
    return steps


async def drive(session: Session, base_url: str, start: int, deadline: float, think_s: float,
                timeout_ms: float) -> None:
    """One user until ``deadline``: from page ``start`` of LOOP, go to the next page, do its reruns, and so on."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    phase, k = session.phase, start
    while time.monotonic() < deadline:
        k += 1
        name = LOOP[k % len(LOOP)]
        steps = [("navigation", lambda s, t, n=name: navigate(s, n, t)), *actions_on(name)]
        for label, step in steps:
            if time.monotonic() >= deadline:
                return
            try:
                phase.samples.append(Sample(label, name, await step(session, timeout_ms)))
            except PlaywrightError as e:  # a timeout, or a page that crashed or closed
                kind = "timeout" if isinstance(e, PlaywrightTimeout) else "playwright"
                phase.error(kind, f"{session.name}, {label} on {name}: {await diagnosis(session)}; {e}")
                await recover(session, base_url, PAGE[name].path, deadline)
                break  # on to the next page
            await asyncio.sleep(think_s)


async def diagnosis(session: Session) -> str:
    """Where the page stood when an action timed out: the probe's conditions, one by one."""
    try:
        return await session.page.evaluate("() => window.__bench.why()")
    except Exception as e:  # a crashed or closed page has nothing to say
        return f"no state ({type(e).__name__})"


async def recover(session: Session, base_url: str, path: str, deadline: float) -> None:
    """After a failed action: reload the page (a new one after a crash) and go on; failures to reload count too."""
    from playwright.async_api import Error as PlaywrightError

    while time.monotonic() < deadline:
        try:
            await load(session, base_url, path)
            return
        except PlaywrightError as e:
            session.phase.error("reload", f"{session.name}: {e}")
            await asyncio.sleep(1.0)


# -- the training job --------------------------------------------------------------------------------------------------

async def start_training(browser: Browser, base_url: str, phase: Phase, budget_s: float) -> Session:
    """Open the Train page in a session of its own and start a run on synthetic data; return once it trains."""
    from playwright.async_api import expect

    session = await open_session(browser, base_url, phase, "train page", PAGE["train"].path)
    page = session.page
    await page.get_by_test_id("stSelectbox").filter(has_text="Data").click()
    await page.get_by_role("option").filter(has_text="Synthetic").click()
    await page.get_by_label("Epochs", exact=True).fill(str(TRAIN_EPOCHS))
    await page.get_by_label("Time budget (s, 0: none)", exact=True).fill(str(int(budget_s)))
    await page.get_by_role("button", name="Start training").click()
    step = page.get_by_test_id("stMetric").filter(has_text="Step").get_by_test_id("stMetricValue")
    await expect(step).to_have_text(re.compile(r"\d"), timeout=LOAD_TIMEOUT_MS)  # the first steps are done
    return session


async def stop_training(session: Session, budget_s: float) -> None:
    """Click the run's Stop button and wait until it reports its result: the job has ended in the server. If it
    does not, wait for the run's time budget to end it, so that the next phase starts without a job either way."""
    from playwright.async_api import Error as PlaywrightError

    page, done = session.page, session.page.locator(f"{TRAINING_DONE}, {ENDED}")
    try:
        # the fragment's Stop button (a button with help text has a hidden copy beside it in the page)
        await page.locator(MAIN_BUTTON).filter(has_text="Stop", visible=True).click(timeout=LOAD_TIMEOUT_MS)
        await done.wait_for(timeout=2 * LOAD_TIMEOUT_MS)
        return
    except PlaywrightError as e:
        session.phase.error("job not stopped", f"Stop did not end the run: {e}", always=True)
    try:
        await done.wait_for(timeout=budget_s * 1000)
    except PlaywrightError as e:
        session.phase.error("job not stopped", f"nor did its time budget: {e}", always=True)


# -- the run -----------------------------------------------------------------------------------------------------------

async def warm_up(browser: Browser, base_url: str, timeout_ms: float) -> None:
    """Visit every page once and do every action once, so that the phases find imports and traces cached; what
    fails here is printed, and the phases go on."""
    from playwright.async_api import Error as PlaywrightError

    phase = Phase(0, "warm-up")
    session = await open_session(browser, base_url, phase, "warm-up", PAGE["overview"].path)
    try:
        for name in (*LOOP[1:], LOOP[0]):
            for label, step in [("navigation", lambda s, t, n=name: navigate(s, n, t)), *actions_on(name)]:
                try:
                    await step(session, timeout_ms)
                except PlaywrightError as e:
                    phase.error("warm-up", f"{label} on {name}: {e}")
                    await recover(session, base_url, PAGE[name].path, time.monotonic() + 120)
        await load(session, base_url, PAGE["train"].path)
    finally:
        await session.context.close()
    if phase.errors:
        print(f"warm-up: {sum(phase.errors.values())} errors: {'; '.join(phase.messages)}", flush=True)


async def run_phase(browser: Browser, base_url: str, pid: int, n: int, with_job: bool,
                    args: argparse.Namespace) -> Phase:
    """N sessions for ``args.seconds``, with or without a training job in the server."""
    phase = Phase(n, "training" if with_job else "anchor")
    sessions = await asyncio.gather(*(open_session(browser, base_url, phase, f"session {i + 1}",
                                                   PAGE[LOOP[i % len(LOOP)]].path) for i in range(n)))
    job, budget_s = None, args.seconds + 120
    try:
        if with_job:
            job = await start_training(browser, base_url, phase, budget_s)
        phase.rss_start_mib, ticks = rss_mib(pid), Ticks.now()
        phase.recording = True
        began = time.monotonic()
        deadline = began + args.seconds
        await asyncio.gather(*(drive(s, base_url, i % len(LOOP), deadline, args.think, args.action_timeout * 1000)
                               for i, s in enumerate(sessions)))
        phase.seconds = time.monotonic() - began
        phase.rss_end_mib, phase.cpu = rss_mib(pid), cpu_shares(ticks, Ticks.now(), pid)
        phase.recording = False  # closing pages and stopping the job are not part of the phase
        if job is not None:
            await stop_training(job, budget_s)
    finally:
        phase.recording = False
        for session in [*sessions, *([job] if job else [])]:
            await session.context.close()
    await asyncio.sleep(2.0)  # the server drops the closed sessions before the next phase
    return phase


async def run_all(base_url: str, pid: int, args: argparse.Namespace, phases: list[Phase]) -> None:
    """Chromium, the warm-up, then the anchor and the training phase for each N, added to ``phases`` as they end."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                   args=[*CHROMIUM_ARGS, *BACKGROUND_ARGS])
        try:
            print(f"Chromium {browser.version}; warming up the caches", flush=True)
            await warm_up(browser, base_url, args.action_timeout * 1000)
            for n in args.sessions:
                for with_job in (False, True):
                    phase = await run_phase(browser, base_url, pid, n, with_job, args)
                    phases.append(phase)
                    print(row(phase), flush=True)
        finally:
            await browser.close()


# -- the server --------------------------------------------------------------------------------------------------------

def start_server(port: int) -> subprocess.Popen:
    """``streamlit run app.py`` on 127.0.0.1:port, its output to the log; in a session of its own, so that the
    shutdown is this script's to do (stop() in main's finally), in order, after the browser has closed. The file
    watcher is off, as on a server: a source file saved during the run must not reload modules under the
    sessions (objects in the shared caches would then belong to the old classes)."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    command = [*streamlit_command(port, "127.0.0.1"), "--server.fileWatcherType", "none"]
    with LOG.open("w", encoding="utf-8") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def server_tracebacks() -> list[str]:
    """The last lines of each traceback in the server's log: what broke in the app, if anything did."""
    try:
        lines = LOG.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j].startswith(" ")), i)
            found.append(lines[end].strip())
    return found


# -- the report --------------------------------------------------------------------------------------------------------

HEADER = (f"{'N':>3}  {'phase':<9}{'actions':>8}{'rerun p50':>11}{'p95':>10}{'nav p50':>10}{'p95':>10}"
          f"{'errors':>8}  server RSS (MiB)")
CPU_HEADER = f"{'N':>3}  {'phase':<9}{'server':>8}{'browser':>9}{'other':>7}{'idle':>6}"


def ms(value: float, width: int) -> str:
    return f"{'–' if math.isnan(value) else f'{value:,.0f}':>{width}} ms"


def row(phase: Phase) -> str:
    """The phase's line of the table: actions, times, errors, the server's memory."""
    s = phase.summary()
    kinds = f" ({', '.join(f'{v} {k}' for k, v in phase.errors.items())})" if s["errors"] else ""
    return (f"{phase.sessions:>3}  {phase.phase:<9}{s['actions']:>8}{ms(s['rerun_p50_ms'], 8)}"
            f"{ms(s['rerun_p95_ms'], 7)}{ms(s['navigation_p50_ms'], 7)}{ms(s['navigation_p95_ms'], 7)}"
            f"{s['errors']:>8}  {phase.rss_start_mib:,.0f} → {phase.rss_end_mib:,.0f}{kinds}")


def cpu_row(phase: Phase) -> str:
    """Where both cores' time went during the phase."""
    share = {key: phase.cpu.get(key, math.nan) for key in ("server", "browser", "other", "machine_busy")}
    return (f"{phase.sessions:>3}  {phase.phase:<9}{share['server']:>8.0%}{share['browser']:>9.0%}"
            f"{share['other']:>7.0%}{1 - share['machine_busy']:>6.0%}")


def ratios(anchor: Phase, loaded: Phase) -> dict[str, float]:
    """p50 and p95 with the job over the same without it."""
    a, b = anchor.summary(), loaded.summary()
    keys = [f"{kind}_{q}_ms" for kind in ("rerun", "navigation") for q in ("p50", "p95")]
    return {key.removesuffix("_ms"): b[key] / a[key] if a[key] else math.nan for key in keys}


def report(phases: list[Phase]) -> list[dict]:
    """The table, the ratios against each anchor, where the CPU and the time went, and the errors; returns the
    ratios."""
    print("\n" + HEADER)
    for phase in phases:
        print(row(phase))
    print("\nwith the training job / anchor (same N, same run):")
    found = []
    for anchor, loaded in zip(phases[::2], phases[1::2]):
        r = ratios(anchor, loaded)
        found.append({"sessions": anchor.sessions, **r})
        print(f"{anchor.sessions:>3}  rerun p50 {r['rerun_p50']:.2f}×, p95 {r['rerun_p95']:.2f}×; "
              f"navigation p50 {r['navigation_p50']:.2f}×, p95 {r['navigation_p95']:.2f}×")
    print("\nshare of both cores' time in each phase: the server, the browser (Chromium, its driver and this script), "
          "other processes on the machine, idle\n" + CPU_HEADER)
    for phase in phases:
        print(cpu_row(phase))
    print("\nmedian of each action (ms):")
    for phase in phases:
        print(f"{phase.sessions:>3}  {phase.phase:<9} "
              + ", ".join(f"{key} {value:,.0f}" for key, value in phase.medians().items()))
    for phase in phases:
        for message in phase.messages:
            print(f"  N={phase.sessions} {phase.phase}: {message}")
    tracebacks = server_tracebacks()
    print(f"server log ({LOG}): {len(tracebacks)} tracebacks" + "".join(f"\n  {t}" for t in tracebacks[:10]))
    return found


# -- main --------------------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8], help="N browser sessions per phase")
    parser.add_argument("--seconds", type=float, default=45.0, help="length of each phase")
    parser.add_argument("--port", type=int, default=0, help="the app's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--think", type=float, default=1.0, help="seconds a session waits between actions")
    parser.add_argument("--action-timeout", type=float, default=30.0, help="seconds before an action is an error")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if any(not 1 <= n <= MAX_SESSIONS for n in args.sessions):
        parser.error(f"--sessions: each N from 1 to {MAX_SESSIONS}")
    if not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds: from 1 to {MAX_SECONDS}")
    if not 0 <= args.think <= 60 or not 1 <= args.action_timeout <= 120:
        parser.error("--think: 0 to 60 s; --action-timeout: 1 to 120 s")
    return args


def time_limit(args: argparse.Namespace) -> float:
    """The most the whole run may take: each phase, its sessions' start and one action past its end, plus the
    training job's start and stop, and the warm-up."""
    per_phase = args.seconds + args.action_timeout + 2 * LOAD_TIMEOUT_MS / 1000
    return 2 * len(args.sessions) * (per_phase + 3 * LOAD_TIMEOUT_MS / 1000) + 300


def interrupted(signum, frame):
    """SIGTERM ends the run as Ctrl-C does, through the finally block that stops the server."""
    raise KeyboardInterrupt


async def run_bounded(base_url: str, pid: int, args: argparse.Namespace, phases: list[Phase]) -> None:
    """run_all within the time limit; Ctrl-C and SIGTERM cancel it, so that the browser closes in order."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    await asyncio.wait_for(run_all(base_url, pid, args, phases), time_limit(args))


def main() -> int:
    from playwright.async_api import Error as PlaywrightError

    args = parse_args()
    if not CHROMIUM.exists():
        print(f"no Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also where the shell started it with Ctrl-C ignored
    print(machine.describe(), flush=True)
    port = args.port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    process, phases, status = start_server(port), [], 0
    try:
        wait_until_healthy(process, base_url, LOG)
        import streamlit

        print(f"streamlit {streamlit.__version__} serving app.py at {base_url} (pid {process.pid}); "
              f"sessions {args.sessions}, {args.seconds:g} s a phase, {args.think:g} s between actions", flush=True)
        print(HEADER, flush=True)
        asyncio.run(run_bounded(base_url, process.pid, args, phases))
    except ServerError as e:
        print(e, file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped: the figures so far follow", file=sys.stderr)
        status = 130
    except (TimeoutError, asyncio.TimeoutError):
        print(f"the run took more than its limit of {time_limit(args):.0f} s and was stopped; the server's log "
              f"ends:\n{log_tail(LOG, 10)}", file=sys.stderr)
        status = 1
    except PlaywrightError as e:  # a session that could not open, a job that could not start
        print(f"the run stopped: {' '.join(str(e).split())[:600]}\nthe server's log ends:\n{log_tail(LOG, 10)}",
              file=sys.stderr)
        status = 1
    finally:
        stop(process)
    found = report(phases)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine.describe(), "args": {**vars(args), "json": str(args.json)},
                                         "phases": [p.summary() for p in phases], "ratios": found}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())

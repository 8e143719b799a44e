"""Files for docs: diagrams (svg png pdf dot), tables (csv json md tex), charts (html, or png svg pdf).

Every function here returns bytes; ``resnet_viz.io.write_file`` puts them on disk whole or not at
all (a temporary file beside the target, then an atomic rename).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import graphviz

from ..errors import ExportError
from ..limits import limits, over
from ..tracing import Trace
from . import tables

DIAGRAM_FORMATS = ("svg", "png", "pdf", "dot")
TABLE_FORMATS = ("csv", "json", "md", "tex")
CHART_FORMATS = ("html", "png", "svg", "pdf")

NEEDS_DOT = (
    "writing {fmt} files needs Graphviz's dot program, which is not installed "
    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) — DOT files work without it"
)
NEEDS_KALEIDO = (
    "static chart images need the kaleido package and a Chrome or Chromium browser "
    "(pip install 'resnet-viz[images]'; Debian/Ubuntu: apt-get install chromium) — HTML charts work without them"
)


class GraphvizCrash(ExportError):
    """``dot`` died on a signal while laying out a graph."""


def has_dot() -> bool:
    return shutil.which("dot") is not None


def diagram_bytes(graph: graphviz.Digraph, fmt: str) -> bytes:
    """A Graphviz graph as DOT text, or rendered by ``dot`` to SVG, PNG or PDF."""
    _check(fmt, DIAGRAM_FORMATS, "diagrams")
    if fmt == "dot":
        return graph.source.encode("utf-8")
    if not has_dot():
        raise ExportError(NEEDS_DOT.format(fmt=fmt.upper()))
    done = run_dot(graph.source, fmt)
    if done.returncode < 0:
        raise GraphvizCrash(f"Graphviz's dot crashed laying out the diagram (signal {-done.returncode}); "
                            "the DOT file can still be drawn elsewhere")
    if done.returncode:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ExportError(f"Graphviz could not render the diagram: {' '.join(detail[:2]) or done.returncode}")
    return done.stdout


def run_dot(source: str, fmt: str) -> subprocess.CompletedProcess:
    """``dot -T<fmt>`` on ``source``, killed after ``limits().dot_seconds``; on Linux it also dies with this
    process, so a stopped export leaves no ``dot`` behind."""
    seconds = limits().dot_seconds
    try:
        return subprocess.run(["dot", f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True,
                              timeout=seconds, preexec_fn=_die_with_parent if _LIBC else None)
    except FileNotFoundError:
        raise ExportError(NEEDS_DOT.format(fmt=fmt.upper())) from None
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        raise ExportError(f"Graphviz's dot took more than {seconds:g} s to lay out the diagram, "
                          f"{over('dot_seconds', seconds)}; fold identical blocks, draw fewer levels, or write "
                          "the DOT file") from None


def _die_with_parent() -> None:
    """In the child, before ``dot`` starts: ask Linux to kill it when its parent dies (PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def block_diagram_bytes(trace: Trace, fmt: str, level: str = "block", direction: str = "TB",
                        fold: bool = True) -> bytes:
    """A block diagram as a file. Older Graphviz (2.43, Debian 12's) can crash laying out the columns
    of a very large unfolded diagram; it is then drawn as one strip instead."""
    from .diagram import block_diagram

    try:
        return diagram_bytes(block_diagram(trace, level, direction, fold), fmt)
    except GraphvizCrash:
        return diagram_bytes(block_diagram(trace, level, direction, fold, wrap=False), fmt)


def table_bytes(trace: Trace, fmt: str, depth: int | None = None) -> bytes:
    """The layer table as CSV, JSON, Markdown or LaTeX (booktabs)."""
    _check(fmt, TABLE_FORMATS, "tables")
    render = {"csv": tables.to_csv, "json": tables.to_json, "md": tables.to_markdown, "tex": tables.to_latex}[fmt]
    return render(trace, depth).encode("utf-8")


def frame_bytes(frame, fmt: str, title: str) -> bytes:
    """A pandas DataFrame as CSV, JSON (``{"title", "rows"}``), Markdown or LaTeX."""
    _check(fmt, TABLE_FORMATS, "tables")
    if fmt == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    if fmt == "json":
        return json.dumps({"title": title, "rows": _records(frame)}, indent=2).encode("utf-8")
    render = tables.frame_markdown if fmt == "md" else tables.frame_latex
    return render(frame, title).encode("utf-8")


def comparison_bytes(comparison, fmt: str, title: str) -> bytes:
    """A comparison's totals (CSV holds those alone) and per-stage deltas."""
    _check(fmt, TABLE_FORMATS, "comparisons")
    if fmt == "csv":
        return comparison.totals.to_csv(index=False).encode("utf-8")
    if fmt == "json":
        data = {"title": title, "totals": _records(comparison.totals), "stages": _records(comparison.stages)}
        return json.dumps(data, indent=2).encode("utf-8")
    render = tables.frame_markdown if fmt == "md" else tables.frame_latex
    text = render(comparison.totals, title) + "\n" + render(comparison.stages, f"{title}: per stage")
    return text.encode("utf-8")


def _records(frame) -> list[dict]:
    # through pandas' JSON writer: numpy numbers become plain numbers and NaN becomes null
    return json.loads(frame.to_json(orient="records"))


def figure_bytes(figure, fmt: str) -> bytes:
    """One plotly figure as a static PNG, SVG or PDF image (kaleido drives a Chromium browser)."""
    _check(fmt, ("png", "svg", "pdf"), "chart images")
    try:
        return figure.to_image(format=fmt, width=1100, height=600, scale=2 if fmt == "png" else 1)
    except (ImportError, ValueError, RuntimeError, OSError) as e:
        if "kaleido" in str(e).lower() or "chrom" in str(e).lower() or isinstance(e, ImportError):
            raise ExportError(NEEDS_KALEIDO) from None
        raise ExportError(f"the chart image could not be made: {e}") from None


def format_of(path: str | Path, fmt: str | None, allowed: tuple[str, ...], what: str) -> str:
    """The format named by ``fmt``, or else by the file's extension ('.markdown' and '.latex' too)."""
    aliases = {"markdown": "md", "latex": "tex", "htm": "html", "gv": "dot"}
    ext = Path(path).suffix.lower().lstrip(".")
    ext = aliases.get(ext, ext)
    chosen = aliases.get(fmt.lower(), fmt.lower()) if fmt else ext
    if not chosen:
        raise ExportError(f"say which format to write ({', '.join(allowed)}): give the file an extension or --format")
    _check(chosen, allowed, what)
    return chosen


def _check(fmt: str, allowed: tuple[str, ...], what: str) -> None:
    if fmt not in allowed:
        raise ExportError(f"{what} can be written as {', '.join(allowed)}, not {fmt!r}")

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from resnet_viz import io as rio
from resnet_viz import preset, trace
from resnet_viz.cli import main
from resnet_viz.views import export
from resnet_viz.views.charts import CHARTS, charts_html, params_by_stage
from resnet_viz.views.compare import depth_study, shortcut_study
from resnet_viz.views.diagram import block_diagram

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
needs_browser = pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("google-chrome")),
                                   reason="static chart images need Chrome or Chromium")
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def resnet20():
    return trace(preset("resnet20"))


def _svg_texts(data: bytes) -> list[str]:
    root = ET.fromstring(data)
    return [t.text for t in root.iter(f"{SVG}text") if t.text]


@needs_dot
@pytest.mark.parametrize("level", ["stage", "block", "layer"])
def test_svg_parses_and_has_the_node_labels(resnet20, level):
    texts = _svg_texts(export.diagram_bytes(block_diagram(resnet20, level), "svg"))
    assert "fc 64→10" in texts and "avg pool 8×8" in texts
    if level == "stage":
        assert {"(16,32,32)", "(32,16,16)", "(64,8,8)", "(64,1,1)"} <= set(texts)
    else:
        assert {"conv 3×3, 32, /2", "BN", "ReLU", "+", "identity"} <= set(texts)
        projection = "1×1 conv, 32, /2 + BN" if level == "block" else "conv 1×1, 32, /2"
        assert projection in texts


@needs_dot
@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG\r\n\x1a\n"), ("pdf", b"%PDF-")])
def test_png_and_pdf_by_magic_bytes_and_size(resnet20, fmt, magic):
    data = export.diagram_bytes(block_diagram(resnet20, "block"), fmt)
    assert data.startswith(magic) and len(data) > 10_000


def test_dot_needs_no_graphviz_program(resnet20, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    graph = block_diagram(resnet20, "stage")
    assert export.diagram_bytes(graph, "dot").decode() == graph.source
    with pytest.raises(export.ExportError, match="writing SVG files needs Graphviz's dot program.*apt-get install "
                                                  "graphviz.*DOT files work without it"):
        export.diagram_bytes(graph, "svg")


def test_tables_read_back_to_the_same_numbers(resnet20):
    rows = list(csv.DictReader(io.StringIO(export.table_bytes(resnet20, "csv").decode())))
    assert [r["name"] for r in rows] == [x.name for x in resnet20.layers]
    assert [int(r["macs"]) for r in rows] == [x.macs for x in resnet20.layers]
    data = json.loads(export.table_bytes(resnet20, "json"))
    assert data["totals"] == resnet20.totals.to_dict()
    assert [x["params"] for x in data["layers"]] == [x.params for x in resnet20.layers]
    md = export.table_bytes(resnet20, "md", depth=1).decode()
    assert "| &nbsp;&nbsp;layer2 | Sequential | 1×32×16×16 | 51,648 | 13,107,200 | 37 |" in md
    tex = export.table_bytes(resnet20, "tex", depth=1).decode()
    assert "\\begin{tabular}{llrrrr}" in tex and "\\quad layer2 & Sequential & 1$\\times$32$\\times$16" in tex
    assert tex.count("\\\\") == 1 + 10  # header + one line per layer down to depth 1


def test_charts_html_is_self_contained(resnet20):
    page = charts_html({name: chart(resnet20) for name, chart in CHARTS.items()}, "resnet20")
    assert all(f'id="{name}"' in page for name in CHARTS)
    assert "<script src=" not in page


@needs_browser
def test_static_chart_image(resnet20):
    data = export.figure_bytes(params_by_stage(resnet20), "png")
    assert data.startswith(b"\x89PNG") and len(data) > 5_000


def test_static_chart_image_without_a_browser_says_what_to_install(resnet20, monkeypatch):
    figure = params_by_stage(resnet20)

    def no_browser(*args, **kwargs):
        raise RuntimeError("Kaleido requires Google Chrome to be installed.")

    monkeypatch.setattr(figure, "to_image", no_browser)
    with pytest.raises(export.ExportError, match="need the kaleido package and a Chrome or Chromium browser"):
        export.figure_bytes(figure, "png")


def test_comparison_exports_read_back():
    study = shortcut_study("resnet20")
    data = json.loads(export.comparison_bytes(study, "json", "shortcuts"))
    assert [row["params"] for row in data["totals"]] == [269_722, 272_474, 272_474 + 14_240 - 2_752]
    rows = list(csv.DictReader(io.StringIO(export.comparison_bytes(study, "csv", "shortcuts").decode())))
    assert [int(r["macs"]) for r in rows] == list(study.totals["macs"])
    depth = list(csv.DictReader(io.StringIO(export.frame_bytes(depth_study(), "csv", "depth").decode())))
    assert [int(r["params"]) for r in depth] == [preset(r["model"], shortcut="A").num_params() for r in depth]


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(rio.os, "replace", broken_replace)
    with pytest.raises(OSError):
        rio.write_file(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # no temporary file left
    monkeypatch.undo()
    rio.write_file(target, b"new")
    assert target.read_text() == "new"
    with pytest.raises(export.ExportError, match="folder .* does not exist"):
        rio.write_file(tmp_path / "missing" / "x.csv", b"")


def test_format_from_extension_or_flag():
    assert export.format_of("a/b.SVG", None, export.DIAGRAM_FORMATS, "diagrams") == "svg"
    assert export.format_of("t.markdown", None, export.TABLE_FORMATS, "tables") == "md"
    assert export.format_of("t.txt", "latex", export.TABLE_FORMATS, "tables") == "tex"
    with pytest.raises(export.ExportError, match="tables can be written as csv, json, md, tex, not 'xlsx'"):
        export.format_of("t.xlsx", None, export.TABLE_FORMATS, "tables")
    with pytest.raises(export.ExportError, match="give the file an extension or --format"):
        export.format_of("diagram", None, export.DIAGRAM_FORMATS, "diagrams")


# -- the export command ----------------------------------------------------------------------------

def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_dot
def test_cli_exports_every_kind(capsys, tmp_path):
    cases = [
        (["resnet20", "--what", "diagram", "--level", "stage"], "d.svg"),
        (["resnet110", "--what", "diagram", "--direction", "LR"], "d.pdf"),
        (["resnet20", "--what", "diagram", "--level", "layer", "--no-fold"], "d.dot"),
        (["resnet50", "--what", "graph", "--depth", "1"], "g.svg"),
        (["resnet20", "--what", "table", "--shortcut", "A"], "t.json"),
        (["resnet20", "--what", "charts"], "c.html"),
        (["--what", "compare"], "depth.md"),
        (["resnet56", "--what", "compare", "--study", "shortcuts"], "s.csv"),
        (["resnet20", "--what", "compare", "--vs", "resnet32", "resnet44"], "vs.html"),
    ]
    for argv, name in cases:
        path = tmp_path / name
        code, out, err = _run(capsys, "export", *argv, "-o", str(path))
        assert (code, err) == (0, ""), (argv, err)
        assert out.startswith(f"wrote {path}") and path.stat().st_size > 100
    assert json.loads((tmp_path / "t.json").read_text())["totals"]["params"] == 269_722
    assert "| resnet110 | 110 | 1,727,962 | 1.73 | 1.70 |" in (tmp_path / "depth.md").read_text()
    assert (tmp_path / "d.dot").read_text() == block_diagram(trace(preset("resnet20")), "layer", fold=False).source


@pytest.mark.parametrize(("argv", "message"), [
    (["resnet20", "--what", "table", "-o", "t.xlsx"], "tables can be written as csv, json, md, tex"),
    (["--what", "diagram", "-o", "d.svg"], "--what diagram needs ARCH"),
    (["resnet20", "--what", "charts", "-o", "c.png"], "choose it with --chart"),
    (["resnet20", "--what", "table", "-o", "missing/t.csv"], "folder 'missing' does not exist"),
    (["resnet20", "--what", "diagram", "--level", "blocks", "-o", "d.svg"], "invalid choice: 'blocks'"),
    (["resnet21", "--what", "table", "-o", "t.csv"], "unknown preset 'resnet21'"),
])
def test_cli_export_errors(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "export", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cli_without_dot_still_writes_dot_and_explains_the_rest(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, _ = _run(capsys, "export", "resnet20", "--what", "diagram", "-o", str(tmp_path / "d.dot"))
    assert code == 0
    code, _, err = _run(capsys, "export", "resnet20", "--what", "diagram", "-o", str(tmp_path / "d.png"))
    assert code == 2 and "needs Graphviz's dot program" in err and "apt-get install graphviz" in err
    assert [p.name for p in tmp_path.iterdir()] == ["d.dot"]


def test_a_graphviz_crash_on_columns_falls_back_to_one_strip(resnet20, monkeypatch):
    real, wrapped = export.diagram_bytes, []

    def crash_on_columns(graph, fmt):
        wrapped.append("constraint=false" in graph.source)
        if wrapped[-1]:
            raise export.GraphvizCrash("dot died")
        return real(graph, "dot")

    monkeypatch.setattr(export, "diagram_bytes", crash_on_columns)
    data = export.block_diagram_bytes(resnet20, "svg")
    assert wrapped == [True, False] and data.startswith(b"digraph")

"""The example notebook, run as a reader runs it: stored without outputs, every cell executed in a fresh kernel
(nbclient), the suite failing if any cell fails; and what its cells show."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "resnet20-study.ipynb"


def _source() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def _cell(nb, text: str):
    """The code cell whose source contains ``text``."""
    (found,) = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    return found


def _mimes(cell) -> list[str]:
    return [mime for output in cell.outputs for mime in output.get("data", {})]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = _source()
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}}).execute()
    return nb


def test_the_notebook_is_stored_without_outputs():
    nb = _source()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_every_cell_runs(executed):
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")


def test_a_trace_shows_as_a_table_down_to_the_blocks(executed):
    (cell,) = [c for c in executed.cells if c.cell_type == "code" and c.source == "t"]
    (html,) = [o.data["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]
    assert "272,474 parameters" in html and "19 of 88 rows" in html
    assert html.count("<tr") == 1 + 19  # the header and the rows of depth 0, 1 and 2


def test_the_diagram_shows_as_svg_with_dot_and_as_dot_text_without(executed):
    cell = _cell(executed, "block_diagram(t)")
    if shutil.which("dot"):
        assert "image/svg+xml" in _mimes(cell)
    else:
        assert cell.outputs[0].data["text/plain"].startswith("digraph")


def test_comparisons_and_studies_show_tables_and_plotly_charts(executed):
    for text in ('shortcut_study("resnet20")', 'residual_vs_plain("resnet20")', 'run_study("gradients"'):
        mimes = _mimes(_cell(executed, text))
        assert "text/html" in mimes and "application/vnd.plotly.v1+json" in mimes, text


def test_the_training_run_shows_a_notebook_progress_bar(executed):
    cell = _cell(executed, "progress_bar(")
    assert "application/vnd.jupyter.widget-view+json" in _mimes(cell)  # tqdm.auto's widget, not a text bar
    assert "validation accuracy" in "".join(o.get("text", "") for o in cell.outputs)


# -- the objects behind those outputs, without a kernel ---------------------------------------------------


def test_trace_table_has_the_layers_pages_columns_down_to_a_depth():
    from resnet_viz import preset, trace
    from resnet_viz.tracing.records import TABLE_COLUMNS

    t = trace(preset("resnet20"))
    for depth in (0, 1, 2, None):
        frame = t.table(depth)
        assert list(frame.columns) == list(TABLE_COLUMNS)
        assert len(frame) == sum(1 for x in t.layers if depth is None or x.depth <= depth)
    assert t.table(0)["name"].tolist() == ["resnet20"]  # the root row by the model's name
    assert t.table(layers=[]).empty and list(t.table(layers=[]).columns) == list(TABLE_COLUMNS)


def test_a_diagram_falls_back_to_its_dot_text_without_dot(monkeypatch):
    from resnet_viz import preset, trace
    from resnet_viz.views import graph
    from resnet_viz.views.diagram import block_diagram

    diagram = block_diagram(trace(preset("resnet20")))
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    assert diagram._repr_mimebundle_() == {"text/plain": diagram.source}
    assert diagram.source.startswith("digraph")


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_a_diagram_and_torchviews_graph_show_as_svg_with_dot():
    from resnet_viz import preset, trace
    from resnet_viz.views.diagram import block_diagram
    from resnet_viz.views.graph import computational_graph

    for diagram in (block_diagram(trace(preset("resnet20"))), computational_graph(preset("resnet20"), depth=1)):
        assert diagram._repr_mimebundle_()["image/svg+xml"].lstrip().startswith("<?xml")


def test_torchviews_graph_keeps_its_source_as_a_diagram():
    import torchview

    from resnet_viz import build_model, preset
    from resnet_viz.views.graph import Diagram, computational_graph

    ours = computational_graph(preset("resnet20"), depth=1)
    theirs = torchview.draw_graph(build_model(preset("resnet20"), device="meta"), input_size=(1, 3, 32, 32),
                                  device="meta", depth=1, graph_name="resnet20", mode="eval").visual_graph
    assert isinstance(ours, Diagram) and ours.source == theirs.source


def _displayed(monkeypatch, obj) -> list:
    """What ``obj`` displays in a notebook, in order."""
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    obj._ipython_display_()
    return shown


def test_a_comparison_displays_its_totals_and_its_charts(monkeypatch):
    import pandas as pd
    import plotly.graph_objects as go

    from resnet_viz.views.compare import residual_vs_plain

    comparison = residual_vs_plain("resnet20")
    shown = _displayed(monkeypatch, comparison)
    assert "resnet20" in shown[0].data and "plain20" in shown[0].data
    assert isinstance(shown[1], pd.DataFrame) and shown[1].equals(comparison.totals)
    assert [type(x) for x in shown[2:]] == [go.Figure, go.Figure]


def test_a_lab_report_displays_its_findings_table_and_charts(monkeypatch):
    import pandas as pd
    import plotly.graph_objects as go

    from resnet_viz.lab.studies import LabSettings, run_study

    report = run_study("gradients", ["plain20", "resnet20"], settings=LabSettings(batch_size=8))
    shown = _displayed(monkeypatch, report)
    assert report.summary_lines()[0] in shown[0].data
    assert isinstance(shown[1], pd.DataFrame) and shown[1].to_dict("records") == report.rows()
    assert shown[2:] and all(isinstance(x, go.Figure) for x in shown[2:])


def test_a_quantization_report_displays_its_summary_table_and_chart(monkeypatch):
    import pandas as pd
    import plotly.graph_objects as go

    from resnet_viz import preset
    from resnet_viz.quantization.reports import SweepReport

    rows = [{"scheme": "float32", "bits": 32, "accuracy": 0.87}, {"scheme": "per-channel", "bits": 8, "accuracy": 0.86},
            {"scheme": "per-channel", "bits": 4, "accuracy": 0.55}]
    report = SweepReport(config=preset("resnet20"), data="CIFAR-10 validation", rows=rows)
    shown = _displayed(monkeypatch, report)
    assert "resnet20" in shown[0].data and "55.00%" in shown[0].data
    assert isinstance(shown[1], pd.DataFrame) and shown[1].to_dict("records") == rows
    (chart,) = shown[2:]
    assert isinstance(chart, go.Figure) and list(chart.data[0].x) == [4, 8]

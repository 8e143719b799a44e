"""A Trace as tables: a text table for the terminal, CSV, JSON and Markdown.

The CLI's ``summary`` and the app's tables call these; nothing here prints.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Sequence

from ..formatting import format_pair, format_shape, human, human_bytes
from ..tracing import Layer, Trace

# Columns of the compact views (text and Markdown); CSV and JSON carry every field.
COMPACT = ("layer", "type", "output_shape", "params", "macs", "receptive_field")
HEADERS = {"layer": "Layer", "type": "Type", "output_shape": "Output shape", "params": "Params",
           "macs": "MACs", "receptive_field": "RF"}


def select(trace: Trace, depth: int | None = None, parts: Iterable[str] | None = None,
           types: Iterable[str] | None = None, search: str = "") -> list[Layer]:
    """Layers down to ``depth``, in the given parts (stem, layer1..., head) and of the given types, whose
    name or type contains ``search`` (any case)."""
    parts, types, needle = set(parts or ()), set(types or ()), search.strip().lower()
    return [
        layer for layer in trace.layers
        if (depth is None or layer.depth <= depth)
        and (not parts or trace.stage_of(layer) in parts)
        and (not types or layer.type in types)
        and (not needle or needle in layer.name.lower() or needle in layer.type.lower())
    ]


def _rows(trace: Trace, depth: int | None, layers: Sequence[Layer] | None) -> list[Layer]:
    return list(layers) if layers is not None else select(trace, depth)


def compact_rows(trace: Trace, depth: int | None = None, indent: str = "  ",
                 layers: Sequence[Layer] | None = None) -> list[dict[str, str]]:
    rows = []
    for layer in _rows(trace, depth, layers):
        rows.append({
            "layer": indent * layer.depth + trace.display_name(layer),
            "type": layer.type,
            "output_shape": format_shape(layer.output_shape),
            "params": f"{layer.params:,}" if layer.kind == "module" else "",
            "macs": f"{layer.macs:,}",
            "receptive_field": format_pair(layer.receptive_field),
        })
    return rows


def totals_lines(trace: Trace) -> list[tuple[str, str]]:
    """(label, value) pairs of the totals, each naming its convention."""
    t = trace.totals
    per = f"for a batch of {trace.batch_size}" if trace.batch_size > 1 else "per image"
    return [
        ("Parameters", f"{t.params:,} ({t.trainable_params:,} trainable; {human_bytes(t.param_bytes)})"),
        ("MACs", f"{t.macs:,} ({human(t.macs)}; multiply-accumulates of conv and linear layers, {per})"),
        ("FLOPs", f"{t.flops:,} ({human(t.flops)}; 2 × MACs, as FlopCounterMode counts)"),
        ("All ops", f"{t.all_ops:,} ({human(t.all_ops)}; FLOPs + bias, BN, ReLU, add and pooling)"),
        ("Activations", f"{human_bytes(t.activation_bytes)} written by a forward pass; "
                        f"{human_bytes(t.peak_activation_bytes)} live at the peak"),
        ("Training memory", f"{human_bytes(t.training_bytes)} estimated for one step at batch "
                            f"{trace.batch_size} (activations + weights + gradients + SGD momentum)"),
    ]


def to_text(trace: Trace, depth: int | None = None, layers: Sequence[Layer] | None = None) -> str:
    rows = compact_rows(trace, depth, layers=layers)
    right = {"params", "macs", "receptive_field"}
    widths = {c: max(len(HEADERS[c]), *(len(r[c]) for r in rows)) for c in COMPACT}

    def line(values: dict[str, str]) -> str:
        cells = [values[c].rjust(widths[c]) if c in right else values[c].ljust(widths[c]) for c in COMPACT]
        return "  ".join(cells).rstrip()

    rule = "─" * len(line(HEADERS))
    out = [trace.describe(), rule, line(HEADERS), rule, *(line(r) for r in rows), rule]
    label_width = max(len(label) for label, _ in totals_lines(trace))
    out += [f"{label.ljust(label_width)}  {value}" for label, value in totals_lines(trace)]
    return "\n".join(out)


def to_markdown(trace: Trace, depth: int | None = None, layers: Sequence[Layer] | None = None) -> str:
    rows = compact_rows(trace, depth, indent="&nbsp;&nbsp;", layers=layers)
    right = {"params", "macs", "receptive_field"}
    out = [f"**{trace.describe()}**", "",
           "| " + " | ".join(HEADERS[c] for c in COMPACT) + " |",
           "|" + "|".join("---:" if c in right else "---" for c in COMPACT) + "|"]
    out += ["| " + " | ".join(_md_cell(r[c]) for c in COMPACT) + " |" for r in rows]
    out += ["", "| Total | |", "|---|---|"]
    out += [f"| {label} | {_md_cell(value)} |" for label, value in totals_lines(trace)]
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_csv(trace: Trace, depth: int | None = None, layers: Sequence[Layer] | None = None) -> str:
    return trace.to_dataframe(_rows(trace, depth, layers)).to_csv(index=False)


def to_json(trace: Trace, depth: int | None = None, layers: Sequence[Layer] | None = None) -> str:
    return json.dumps(trace.to_dict(layers=_rows(trace, depth, layers)), indent=2)


FORMATS = {"table": to_text, "json": to_json, "csv": to_csv, "markdown": to_markdown}


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "×": r"$\times$", "→": r"$\to$"}
_TEX_SPECIAL = re.compile("|".join(re.escape(c) for c in _TEX))


def _tex(text: str) -> str:
    return _TEX_SPECIAL.sub(lambda m: _TEX[m.group()], text)


def to_latex(trace: Trace, depth: int | None = None, layers: Sequence[Layer] | None = None) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``) with the totals in its caption."""
    chosen = _rows(trace, depth, layers)
    rows = compact_rows(trace, layers=chosen, indent="")
    depths = [layer.depth for layer in chosen]
    t = trace.totals
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[ht]",
        "\\centering\\small",
        "\\begin{tabular}{llrrrr}",
        "\\toprule",
        " & ".join(HEADERS[c] for c in COMPACT) + " \\\\",
        "\\midrule",
    ]
    for row, d in zip(rows, depths):
        cells = [_tex(row[c]) for c in COMPACT]
        cells[0] = "\\quad " * d + cells[0]
        lines.append(" & ".join(cells) + " \\\\")
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{_tex(trace.describe())}: {t.params:,} parameters, {_tex(human(t.macs))} MACs "
        f"(multiply-accumulates of conv and linear layers; FLOPs = 2 $\\times$ MACs).}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


FORMATS["latex"] = to_latex


def _cell(value) -> str:
    """A table cell: whole numbers with thousands separators, floats to 2 decimals, NaN empty."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else f"{value:,.2f}"
    return str(value)


def frame_markdown(frame, title: str = "") -> str:
    """A pandas DataFrame as a Markdown table (numbers right-aligned)."""
    numeric = [frame[c].dtype.kind in "iuf" for c in frame.columns]
    out = [f"**{title}**", ""] if title else []
    out.append("| " + " | ".join(_md_cell(str(c)) for c in frame.columns) + " |")
    out.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    out += ["| " + " | ".join(_md_cell(_cell(v)) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(out) + "\n"


def frame_latex(frame, title: str = "") -> str:
    """A pandas DataFrame as a booktabs table (needs ``\\usepackage{booktabs}``)."""
    align = "".join("r" if frame[c].dtype.kind in "iuf" else "l" for c in frame.columns)
    lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[ht]", "\\centering\\small",
             f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(_tex(str(c)) for c in frame.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(_tex(_cell(v)) for v in row) + " \\\\" for row in frame.itertuples(index=False)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    if title:
        lines.append(f"\\caption{{{_tex(title)}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"

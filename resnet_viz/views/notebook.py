"""Results in a notebook (Jupyter, VS Code): a comparison, a study or a quantization report shows itself as a
few lines of text, a table and plotly charts; each one's ``_ipython_display_`` calls ``show``."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def show(lines: Sequence[str], table: Any, figures: Mapping[str, Any] | Iterable[Any] = ()) -> None:
    """Display ``lines`` (the first in bold, the rest as they are printed), ``table`` (a DataFrame or a list of
    dicts) and each figure, through IPython's display machinery."""
    import pandas as pd
    from IPython.display import HTML, display

    head, *rest = lines
    body = f"<pre>{html.escape(chr(10).join(rest))}</pre>" if rest else ""
    display(HTML(f"<p><b>{html.escape(head)}</b></p>{body}"))
    display(table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table)))
    for figure in (figures.values() if isinstance(figures, Mapping) else figures):
        display(figure)

"""Progress bars for long work, from tqdm.auto: a text bar in a terminal, a widget in a notebook (Jupyter, VS
Code). The command line shows them; in a notebook, pass ``bar.show`` (or ``bar.count``) as the callback:

    with progress_bar("training") as bar:
        result = Trainer(config, data, settings).run(on_progress=bar.show)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ProgressBar:
    """A bar in thousandths of a run: ``show(progress)`` takes a training step's ``Progress`` (or anything with
    ``progress``, ``epoch``, ``loss``, ``train_acc`` and ``images_per_s``); ``count(done, total)`` counts."""

    def __init__(self, desc: str, enabled: bool = True, leave: bool = True):
        from tqdm.auto import tqdm

        self.tqdm = tqdm(total=1000, desc=desc, unit="‰", disable=not enabled, leave=leave,
                         bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def show(self, p) -> None:
        self.tqdm.n = int(1000 * min(p.progress, 1.0))
        self.tqdm.set_postfix_str(f"epoch {p.epoch}, loss {p.loss:.3f}, acc {p.train_acc:.1%}, "
                                  f"{p.images_per_s:,.0f} img/s", refresh=False)
        self.tqdm.refresh()

    def count(self, done: int, total: int) -> None:
        """A ``progress(done, total)`` callback."""
        self.tqdm.total, self.tqdm.n = total, done
        self.tqdm.refresh()

    def write(self, text: str) -> None:
        self.tqdm.write(text)

    def close(self) -> None:
        self.tqdm.close()


@contextmanager
def progress_bar(desc: str, enabled: bool = True, leave: bool = True) -> Iterator[ProgressBar]:
    """A ``ProgressBar``, closed at the end of the ``with`` block however it ends."""
    bar = ProgressBar(desc, enabled, leave)
    try:
        yield bar
    finally:
        bar.close()

"""Views of a trace: tables, charts, block diagrams, torchview's graph, comparisons, the walk-through, and the
files they export to. Each takes a ``Trace`` (or plain records of a run) and returns data, figures or bytes;
none of them trains, loads data or prints."""

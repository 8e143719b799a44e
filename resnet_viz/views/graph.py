"""torchview's computational graph of every tensor operation, drawn on the meta device."""

from __future__ import annotations

import copy
import shutil

import graphviz
from torch import nn

from ..config import ResNetConfig
from ..errors import ConfigError
from ..model import build_model

DIRECTIONS = ("TB", "LR")


class Diagram(graphviz.Digraph):
    """A Graphviz graph that shows itself in a notebook: as SVG where Graphviz's ``dot`` program is installed,
    else as its DOT text (paste it into any Graphviz viewer)."""

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs) -> dict[str, str]:
        if shutil.which("dot"):
            try:
                return super()._repr_mimebundle_(include, exclude, **kwargs)
            except (graphviz.ExecutableNotFound, graphviz.CalledProcessError):
                pass  # dot failed on this graph: its text still says everything
        return {"text/plain": self.source}

    @classmethod
    def of(cls, graph: graphviz.Digraph) -> Diagram:
        """A copy of ``graph`` (torchview's, say) as a Diagram, as graphviz's own ``copy`` makes it."""
        return cls(**graph._copy_kwargs())


def computational_graph(
    config_or_model: ResNetConfig | nn.Module,
    input_size: tuple[int, int, int] | None = None,
    depth: int = 3,
    expand_nested: bool = True,
    direction: str = "TB",
    batch_size: int = 1,
) -> Diagram:
    """torchview's graph of every tensor operation, on the meta device.

    It runs on a private copy of the network, so the caller's model is never moved or changed.
    """
    import torchview

    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if isinstance(config_or_model, ResNetConfig):
        config, model = config_or_model, build_model(config_or_model, device="meta")
    else:
        config = getattr(config_or_model, "config", None)
        model = build_model(config, device="meta") if isinstance(config, ResNetConfig) else copy.deepcopy(
            config_or_model).to("meta")
    if input_size is None:
        if not isinstance(config, ResNetConfig):
            raise ConfigError("input_size (C, H, W) is needed for a model that was not built from a config")
        input_size = config.input_shape
    graph = torchview.draw_graph(
        model, input_size=(batch_size, *input_size), device="meta", depth=depth, expand_nested=expand_nested,
        graph_dir=direction, graph_name=getattr(config, "name", type(model).__name__), mode="eval",
    )
    return Diagram.of(graph.visual_graph)

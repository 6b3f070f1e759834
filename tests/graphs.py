"""A ``torch.compile`` backend that counts graphs, shared by the mixer, task and harness tests of
``task.compile``."""

from __future__ import annotations

from collections.abc import Callable

import torch


class GraphCounter:
    """A ``torch.compile`` backend that keeps the graphs dynamo hands it and runs each as traced.

    Dynamo calls its backend once per graph it compiles: a graph break shows as two graphs for one
    call (and raises under ``fullgraph=True``), a recompile as a new graph for a call already seen.
    Running the traced graph itself (no code generation) costs only dynamo's tracing.
    """

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        self.graphs.append(graph)
        return graph.forward

"""Analysis of models and runs: parameter and FLOP accounting under the paper's convention."""

from afno_repro.analysis.complexity import (
    ATTENTION_MATMULS,
    DataDependentShapeError,
    FlopReport,
    count_flops,
    count_params,
    counting_convention,
)

__all__ = ["ATTENTION_MATMULS", "DataDependentShapeError", "FlopReport", "count_flops", "count_params", "counting_convention"]

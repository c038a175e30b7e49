"""Where an inspected model first goes wrong, in plain words, naming the module.

The rules, thresholds and words are `initscope.study.flags`, the same as the
run report's flags table: rms outside [0.1, 10]× the input's, effective rank
below half the input's (or of the layer's units, if fewer), over half the
units dead; and, for gradients, a weighted layer whose grad_norm is below
1e-3 of the largest layer's (vanishing gradients). A model's scale and
rank are compared with its reference state (the `reference` column of the
layers table: the input, or the embedding's output for token ids, the first
layer for images), and states flagged "constant input" are not compared. A
Linear's or Conv's output that a norm reads next (`normalised_by` in the
layers table: conv → BatchNorm, dense → LayerNorm) is not judged by its
scale: the norm sets it, and its own output is judged instead.
"""

from __future__ import annotations

import pandas as pd

from initscope.study.flags import MODEL_FLAG_COLUMNS as FLAG_COLUMNS
from initscope.study.flags import diagnosis_lines, model_context, model_flags_table

__all__ = ["flag_table", "diagnose", "FLAG_COLUMNS"]


def _context(result) -> tuple[dict[str, dict[int, int]], dict[str, int], dict[str, set[int]]]:
    """Per init label, each layer's unit count, the reference layer and the layers a norm reads next
    (`initscope.study.flags.model_context`)."""
    return model_context(getattr(result, "layers", None))


def flag_table(result) -> pd.DataFrame:
    """One row per `init` label of an inspection's Result: the first layer (and module) of each problem.

    Cells read "layer l (module, Type): detail", "never" or "not measured".
    Columns: `FLAG_COLUMNS`.
    """
    return model_flags_table(result.metrics, result.flags, *_context(result))


def diagnose(result, *, limit: int = 12) -> list[str]:
    """Plain-language lines, one per layer with a problem, e.g.
    "model: layer 7 (body.6, ReLU): 61% dead units, effective rank 3.1 of 256 units (input 28.4)".

    At most `limit` lines per init label, then a count of the rest.
    """
    units, reference, normalised = _context(result)
    return diagnosis_lines(result.metrics, units, limit=limit, reference=reference, flags=result.flags,
                           normalised=normalised)

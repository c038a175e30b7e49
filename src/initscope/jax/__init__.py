"""The JAX adapter: Flax NNX, Flax Linen and Equinox models, and plain functions f(params, x).

It records and differentiates, and measures nothing itself:

- `program(model)`: the model as one pure function apply(params, x) ->
  (output, states) that returns every submodule call's output in execution
  order, with names from the model's own paths (`initscope.jax.programs`);
  `mark(name, value)` records a value inside a plain function.
- `initialize(model, "kaiming-normal")`: a copy of the model whose
  Dense/Linear/Conv weights are registry draws, with torch's fans
  (`initscope.jax.initialization`); the given model is not changed.
- `state_jacobians`, `gradient_norms`, `leaves`, `layer_params`: per-sample
  Jacobians by forward mode and gradients by parameter kind
  (`initscope.jax.differentiation`).

This subpackage imports jax (and flax or equinox when the model is one);
`import initscope` does not import it. Install with `pip install "initscope[jax]"`.
"""

from initscope.jax.differentiation import (
    LOSSES,
    PARAM_KINDS,
    gradient_norms,
    layer_params,
    leaves,
    loss_function,
    state_jacobians,
)
from initscope.jax.initialization import initialize, weight_fans
from initscope.jax.programs import FRAMEWORKS, Call, Program, framework_of, mark, program

__all__ = ["program", "mark", "initialize", "weight_fans", "Program", "Call", "framework_of", "FRAMEWORKS", "state_jacobians", "gradient_norms",
           "leaves", "layer_params", "loss_function", "LOSSES", "PARAM_KINDS"]

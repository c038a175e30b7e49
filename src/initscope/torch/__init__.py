"""The torch adapter: diagnose any torch.nn.Module, and initialize it from initscope's registry.

- `inspect(model, inputs, ...)`: the core's per-layer metrics and spectra, one
  layer per recorded module call in execution order, as tidy tables that the
  report and CSV writers take unchanged.
- `initialize(model, "kaiming-normal", gain=...)`: any registry initializer on
  every Linear/Conv/ConvTranspose weight and HuggingFace Conv1D, with the fans
  of torch's layouts; `initialization_plan(model)` names what it draws, the
  tied weights it keeps and every parameter it leaves alone.
- `flag_table`, `diagnose`: where things first go wrong, in plain words.
- `load_state_dict`, `load_factory`, `load_tensor`: safe loading (weights_only=True).

This subpackage imports torch; `import initscope` does not import it.
"""

from initscope.torch.diagnosis import diagnose, flag_table
from initscope.torch.initializers import Fans, ParameterPlan, initialization_plan, initialize, weight_fans
from initscope.torch.inspection import inspect
from initscope.torch.loading import (
    ModelError,
    build_model,
    load_factory,
    load_state_dict,
    load_tensor,
    random_inputs,
)
from initscope.torch.tables import InspectResult, combine

__all__ = [
    "inspect",
    "initialize",
    "initialization_plan",
    "ParameterPlan",
    "InspectResult",
    "combine",
    "flag_table",
    "diagnose",
    "weight_fans",
    "Fans",
    "ModelError",
    "load_factory",
    "build_model",
    "load_state_dict",
    "load_tensor",
    "random_inputs",
]

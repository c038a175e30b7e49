"""The interactive report: plotly figures of a run, one offline HTML page, static PNGs/GIFs.

Every figure function takes the run's tidy tables and returns a
`plotly.graph_objects.Figure`; none saves or prints. `write_report` is the only
writer. plotly and matplotlib are imported inside the functions that use them.
"""

from .depth import metric_depth_figure
from .flags import flags_table
from .geometry import layer_projection_figure
from .page import build_page, write_report
from .spectra import spectrum_animation_figure, spectrum_heatmap_figure
from .tables import RunTables, load_run
from .weights import weight_norm_figure

__all__ = [
    "layer_projection_figure",
    "weight_norm_figure",
    "spectrum_animation_figure",
    "spectrum_heatmap_figure",
    "metric_depth_figure",
    "flags_table",
    "write_report",
    "build_page",
    "load_run",
    "RunTables",
]

"""The interactive report: plotly figures of a run, one offline HTML page, static PNGs/GIFs.

Every figure function takes the run's tidy tables and returns a
`plotly.graph_objects.Figure`; none saves or prints. `write_report` is the only
writer. plotly and matplotlib are imported inside the functions that use them.
"""

from initscope.report.depth import metric_depth_figure
from initscope.report.flags import flags_table
from initscope.report.geometry import layer_projection_figure
from initscope.report.page import build_page, write_report
from initscope.report.spectra import spectrum_animation_figure, spectrum_heatmap_figure
from initscope.report.tables import RunTables, load_run
from initscope.report.weights import weight_norm_figure

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

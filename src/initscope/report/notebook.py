"""The report inside a notebook: the full page, self-contained and offline, in an iframe.

`Result.show()` calls `show`. The page is the one `write_report` writes
(plotly.js inline, nothing fetched); an iframe's `srcdoc` keeps its styles
and scripts apart from the notebook's, and works the same in Jupyter,
JupyterLab and VS Code, where a notebook's own HTML output may not run scripts.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

from initscope.report.page import build_page, write_page
from initscope.report.tables import as_tables

__all__ = ["show", "report_iframe", "ReportView"]


def report_iframe(result_or_tables, *, height: int = 900) -> str:
    """The report page of a Result (or tables) as one `<iframe srcdoc=...>` element."""
    if not isinstance(height, int) or isinstance(height, bool) or height < 100:
        raise ValueError(f"The 'height' parameter of show must be an integer >= 100 (pixels). Got {height!r} instead.")
    page = build_page(as_tables(result_or_tables))
    return (f'<iframe class="initscope-report" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width: 100%; height: {height}px; border: 1px solid #ddd;"></iframe>')


class ReportView:
    """A report to display: a notebook shows it through `_repr_html_`."""

    def __init__(self, iframe: str):
        self.iframe = iframe

    def _repr_html_(self) -> str:
        return self.iframe


def show(result_or_tables, *, height: int = 900):
    """Display the report inline when running under IPython; else write it to a temporary file and open it.

    Returns None in a notebook (the report is displayed), else the path of
    the page written.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        from IPython.display import display

        display(ReportView(report_iframe(result_or_tables, height=height)))
        return None
    import webbrowser

    path = _page_path()
    write_page(result_or_tables, path)  # a folder of this process's own: nothing there to protect
    webbrowser.open(path.as_uri())
    return path


_PAGES = "initscope-report-"


def _page_path() -> Path:
    """A new page in this process's one folder under the temporary directory; the folders of processes
    that have ended are removed first. The browser reads a page after show() returns, maybe after the
    process has ended, so a page stays until a later show() of another process finds its owner gone."""
    import itertools
    import os
    import shutil

    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{_PAGES}*"):
        pid = folder.name[len(_PAGES):]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    here = root / f"{_PAGES}{os.getpid()}"
    here.mkdir(exist_ok=True)
    return next(here / f"report-{k}.html" for k in itertools.count(1) if not (here / f"report-{k}.html").exists())


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive, not ours to judge
        return True
    return True

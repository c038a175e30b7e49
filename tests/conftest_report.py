"""Helpers shared by the report tests (imported by name; pytest does not load this file itself)."""

from __future__ import annotations

import html.parser
from collections import defaultdict

import numpy as np

FIGURE_SECTIONS = ("layers-3d", "weight-norms", "spectra", "spectrum-heatmap", "metrics-depth")
INITS5 = ("kaiming-normal", "xavier-normal", "normal", "sphere", "orthogonal")


def small_run(**overrides):
    """A real `run` of a small study: 3 trials, depth 4, 40 samples, width 12."""
    from initscope.study.runner import run

    fields = dict(trials=3, depth=4, samples=40, width=12, workers=1)
    fields.update(overrides)
    return run(**fields)


class SectionParser(html.parser.HTMLParser):
    """Counts plotly figure divs and scripts per <section id=...> of a page."""

    def __init__(self):
        super().__init__()
        self.section: str | None = None
        self.figures: dict[str, int] = defaultdict(int)
        self.sections: list[str] = []
        self.script_srcs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id")
            self.sections.append(self.section)
        elif tag == "div" and "plotly-graph-div" in (attrs.get("class") or "").split():
            self.figures[self.section] += 1
        elif tag == "script":
            self.scripts += 1
            if "src" in attrs:
                self.script_srcs.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None


def parse_page(text: str) -> SectionParser:
    parser = SectionParser()
    parser.feed(text)
    return parser


def large_tables(*, inits=INITS5, depth=50, samples=1000, width=100, trials=3, seed=0):
    """Tables of the shape of a large run (random values, realistic sizes), fast to make.

    5 initializers × 51 layers × 1000 samples of 3D projections, spectra of
    min(samples, width) components for every trial, weight norms of every
    neuron, and metrics for every metric name.
    """
    import pandas as pd

    from initscope.report.depth import METRIC_ORDER

    rng = np.random.default_rng(seed)
    layers = np.arange(depth + 1)
    config = dict(init=tuple(inits), gain=None, data="ball", input_dim=10, width=width, depth=depth,
                  samples=samples, activation="relu", shift="linspace", shift_scale=1.0, residual=0.0,
                  norm="none", readout="zeros", target="cos-norm", trials=trials, seed=seed,
                  dtype="float64", metrics=METRIC_ORDER)
    scale = np.exp(rng.normal(0, 0.2, size=(len(inits), depth + 1)).cumsum(axis=1))

    n_rows = len(inits) * (depth + 1) * samples
    target = np.cos(rng.uniform(0, 1, samples))
    projections = pd.DataFrame({
        "init": np.repeat(np.array(inits), (depth + 1) * samples),
        "trial": 0,
        "layer": np.tile(np.repeat(layers, samples), len(inits)),
        "sample": np.tile(np.arange(samples), len(inits) * (depth + 1)),
        "pc1": rng.normal(size=n_rows) * np.repeat(scale.ravel(), samples),
        "pc2": rng.normal(size=n_rows) * 0.5 * np.repeat(scale.ravel(), samples),
        "pc3": rng.normal(size=n_rows) * 0.2 * np.repeat(scale.ravel(), samples),
        "target": np.tile(target, len(inits) * (depth + 1)),
    })

    K = min(samples, width)
    k = np.arange(1, K + 1)
    spec = np.exp(-k[None, :] * rng.uniform(0.01, 0.3, size=(len(inits) * trials * (depth + 1), 1)))
    spectra = pd.DataFrame({
        "init": np.repeat(np.array(inits), trials * (depth + 1) * K),
        "trial": np.tile(np.repeat(np.arange(trials), (depth + 1) * K), len(inits)),
        "layer": np.tile(np.repeat(layers, K), len(inits) * trials),
        "k": np.tile(k, len(inits) * trials * (depth + 1)),
        "singular_value": spec.ravel(),
    })

    per_trial = width * depth
    weight_norms = pd.DataFrame({
        "init": np.repeat(np.array(inits), trials * per_trial),
        "trial": np.tile(np.repeat(np.arange(trials), per_trial), len(inits)),
        "layer": np.tile(np.repeat(np.arange(1, depth + 1), width), len(inits) * trials),
        "kind": np.tile(np.where(np.repeat(np.arange(1, depth + 1), width) == 1, "input", "internal"),
                        len(inits) * trials),
        "norm": np.sqrt(rng.chisquare(width, size=len(inits) * trials * per_trial)),
    })

    rows = len(inits) * trials * (depth + 1) * len(METRIC_ORDER)
    metrics = pd.DataFrame({
        "init": np.repeat(np.array(inits), trials * (depth + 1) * len(METRIC_ORDER)),
        "trial": np.tile(np.repeat(np.arange(trials), (depth + 1) * len(METRIC_ORDER)), len(inits)),
        "layer": np.tile(np.repeat(layers, len(METRIC_ORDER)), len(inits) * trials),
        "metric": np.tile(np.array(METRIC_ORDER), len(inits) * trials * (depth + 1)),
        "value": rng.uniform(0.1, 1.0, size=rows),
    })
    for name, value in config.items():
        if name != "init":
            metrics[name] = ",".join(value) if isinstance(value, tuple) else (np.nan if value is None else value)
    flags = pd.DataFrame({"init": [inits[min(2, len(inits) - 1)]], "trial": [0], "layer": [depth - 3],
                          "flag": ["overflow"]})
    return dict(metrics=metrics, spectra=spectra, projections=projections, weight_norms=weight_norms,
                flags=flags, config=config)

"""The HTML report of a replay or a backtest: one self-contained file.

Per model: the KS statistic of every numeric column (chi-square for categorical ones)
over the run against its threshold, with the triggers marked; the error (MAE) and the
performance (R2 and RMSE, or accuracy) against the baseline; then a table of every
trigger and its root causes. The plots are matplotlib PNGs embedded as base64, so the
file can be mailed or attached to a ticket as is.

The numbers are `ModelMonitor.snapshot()`s sampled by the caller (`Timeline`) every few
events while it feeds the monitor; the report itself only draws them.

Examples
--------
>>> t = Timeline("m", "regression", x_label="row")
>>> t.sample_features(500, {"columns": {"x": {"ks_statistic": 0.02, "ks_threshold": 0.1}}})
>>> t.sample_labelled(500, {"mae": 0.4, "r2": 0.8, "rmse": 0.5, "accuracy": float("nan")})
>>> html = render("demo", [("rows", "500")], [t], [])
>>> html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64,") == 2
True
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from schemas.errors import UsageError

MAX_POINTS = 4000  # per line; longer series are thinned evenly before drawing
GRID_COLUMNS = 3  # small multiples per row in the per-column figure
DPI = 90
_PERFORMANCE = {"regression": ("r2", "rmse"), "classification": ("accuracy",)}
_LABELS = {"mae": "MAE (error)", "r2": "R²", "rmse": "RMSE", "accuracy": "accuracy"}


@dataclass
class Mark:
    """A trigger on the time axis of its model's plots."""

    x: Any
    source: str  # "features" or "labelled"
    columns: list[str]
    severity: str


@dataclass
class Timeline:
    """Sampled snapshots of one model's monitor, in the order they were taken."""

    model_id: str
    task: str
    x_label: str = "event"
    feature_x: list[Any] = field(default_factory=list)
    # column -> (kind, statistics, thresholds); kind "KS" or "chi²"
    columns: dict[str, tuple[str, list[float], list[float]]] = field(default_factory=dict)
    labelled_x: list[Any] = field(default_factory=list)
    labelled: dict[str, list[float]] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)
    # Labelled events the monitor learns its error baseline from (its snapshot shows 0
    # for them, not a measurement): drawn as gaps. `DetectorConfig.concept_baseline_size`.
    labelled_warmup: int = 0

    def sample_features(self, x: Any, snapshot: dict[str, Any]) -> None:
        self.feature_x.append(x)
        for name, column in snapshot["columns"].items():
            if "ks_statistic" in column:
                kind, stat, threshold = "KS", column["ks_statistic"], column["ks_threshold"]
            else:
                kind, stat, threshold = "chi²", column["chi2_statistic"], column["chi2_threshold"]
            entry = self.columns.setdefault(name, (kind, [], []))
            entry[1].append(float(stat))
            entry[2].append(float(threshold))

    def sample_labelled(self, x: Any, snapshot: dict[str, Any]) -> None:
        self.labelled_x.append(x)
        warm = snapshot.get("labelled_seen", math.inf) > self.labelled_warmup
        for key in ("mae", *_PERFORMANCE[self.task]):
            self.labelled.setdefault(key, []).append(float(snapshot.get(key, math.nan)) if warm else math.nan)
        for key in ("r2", "rmse", "accuracy"):
            value = snapshot.get(f"baseline_{key}")
            if value is not None and math.isfinite(value):
                self.baseline[key] = float(value)

    def mark(self, x: Any, trigger: dict[str, Any]) -> None:
        self.marks.append(Mark(x, trigger["source"], list(trigger["columns"]), trigger["severity"]))


def write_report(
    path: str | Path, title: str, summary: Sequence[tuple[str, str]], timelines: Sequence[Timeline],
    triggers: Sequence[dict[str, Any]],
) -> None:
    text = render(title, summary, timelines, triggers)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror})") from None


def render(
    title: str, summary: Sequence[tuple[str, str]], timelines: Sequence[Timeline],
    triggers: Sequence[dict[str, Any]],
) -> str:
    """The report as one HTML document; `triggers` are the JSON lines written."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="summary">',
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary),
        "</table>",
    ]
    for timeline in timelines:
        parts.append(f'<section class="model"><h2>Model {esc(timeline.model_id)}</h2>')
        if timeline.feature_x and timeline.columns:
            parts.append("<h3>Drift statistic per column</h3>")
            parts.append(_img(_columns_figure(timeline), f"per-column drift statistics of {timeline.model_id}"))
        else:
            parts.append('<p class="none">No feature events in this run.</p>')
        if timeline.labelled_x and any(_finite(v) for v in timeline.labelled.values()):
            parts.append("<h3>Error and performance</h3>")
            parts.append(_img(_labelled_figure(timeline), f"error and performance of {timeline.model_id}"))
        else:
            parts.append('<p class="none">No labelled events (predictions with actuals) in this run.</p>')
        parts.append("</section>")
    parts.append(f"<h2>Triggers ({len(triggers)})</h2>")
    parts.append(_trigger_table(triggers))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- figures -----------------------------------------------------------------------------
def _columns_figure(t: Timeline) -> Figure:
    names = list(t.columns)
    rows = math.ceil(len(names) / GRID_COLUMNS)
    cols = min(GRID_COLUMNS, len(names))
    figure = Figure(figsize=(4.2 * cols, 2.6 * rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        kind, stats, thresholds = t.columns[name]
        x = _thin(t.feature_x)
        ax.step(x, _thin(stats), where="post", color="#1f77b4", lw=1.2, label=f"{kind} statistic")
        ax.step(x, _thin(thresholds), where="post", color="#555555", lw=1, ls="--", label="threshold")
        for mark in t.marks:
            if mark.source != "features":
                continue
            named = name in mark.columns
            ax.axvline(mark.x, color="#d62728" if named else "#bbbbbb", lw=1.5 if named else 0.8,
                       ls="-" if named else ":")
        ax.set_title(f"{name} ({kind})", fontsize=10)
        _time_axis(ax, t.feature_x)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(t.x_label, fontsize=8)
    figure.suptitle("red: a trigger naming the column; grey dotted: a trigger on other columns", fontsize=9)
    return figure


def _labelled_figure(t: Timeline) -> Figure:
    keys = [k for k in ("mae", *_PERFORMANCE[t.task]) if k in t.labelled]
    figure = Figure(figsize=(4.2 * len(keys), 2.8), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    x = _thin(t.labelled_x)
    for ax, key in zip(axes, keys):
        ax.plot(x, _thin(t.labelled[key]), color="#2ca02c", lw=1.2, label=_LABELS[key])
        if key in t.baseline:
            ax.axhline(t.baseline[key], color="#555555", ls="--", lw=1, label="baseline")
        for mark in t.marks:
            if mark.source == "labelled":
                ax.axvline(mark.x, color="#d62728", lw=1.5)
        ax.set_title(_LABELS[key], fontsize=10)
        ax.set_xlabel(t.x_label, fontsize=8)
        _time_axis(ax, t.labelled_x)
        ax.legend(fontsize=7, loc="upper left")
    figure.suptitle("windowed over the labelled events; red: a labelled trigger", fontsize=9)
    return figure


def _time_axis(ax: Axes, x: Sequence[Any]) -> None:
    ax.tick_params(labelsize=8)
    if x and isinstance(x[0], dt.datetime):
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _thin(values: Sequence[Any]) -> Sequence[Any]:
    if len(values) <= MAX_POINTS:
        return values
    step = math.ceil(len(values) / MAX_POINTS)
    return list(values[::step]) + ([values[-1]] if (len(values) - 1) % step else [])


def _finite(values: Iterable[float]) -> bool:
    return any(math.isfinite(v) for v in values)


# -- trigger table -------------------------------------------------------------------------
def _trigger_table(triggers: Sequence[dict[str, Any]]) -> str:
    if not triggers:
        return '<p class="none">No trigger.</p>'
    esc = html.escape
    where_keys = [k for k in ("event_time", "topic", "partition", "kafka_offset") if k in triggers[0]]
    head = ["model", *where_keys, "offset", "source", "severity", "confidence", "types",
            "root cause", "reason", "trigger_id"]
    rows = ['<table class="triggers"><thead><tr>', *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for t in triggers:
        causes = "<br>".join(
            esc(f"{c['signal']}{'(' + c['column'] + ')' if c.get('column') else ''} × {c['strength']:.2f}")
            for c in t["root_cause"])
        cells = [esc(str(t.get("model_id", ""))), *(esc(_text(t[k])) for k in where_keys),
                 esc(str(t["offset"])), esc(t["source"]),
                 f'<span class="sev {esc(t["severity"])}">{esc(t["severity"])}</span>',
                 f"{t['confidence']:.2f}", esc(", ".join(map(str, t["trigger_types"]))), causes,
                 esc(t["reason"]), f"<code>{esc(str(t.get('trigger_id', '')))}</code>"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1em;color:#444}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
table.summary th{background:#f4f4f4}
table.triggers thead th{background:#f4f4f4;position:sticky;top:0}
img{max-width:100%}.none{color:#777;font-style:italic}
.sev{font-weight:600}.LOW{color:#777}.MEDIUM{color:#b8860b}.HIGH{color:#d2691e}.CRITICAL{color:#c00}
code{font-size:.9em}
""".strip()

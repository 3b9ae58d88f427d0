"""The HTML report of a replay or a backtest: one self-contained, interactive file.

Per model, one figure whose panels share the time axis: a lane of the triggers, each a
marker coloured by its severity (hover: types, columns, reason); the drift statistic of
every column divided by its threshold (KS for numeric columns, chi-square for
categorical ones; 1 is the threshold, hover gives the raw values); the error (MAE) and
the performance (R2 and RMSE, or accuracy) against their baselines. Then the serial
dependence per column the monitor is calibrated to (when the caller gave it), and per
trigger (the first `MAX_TRIGGER_DETAILS`), the named columns' reference distribution
against the window's (`column_distributions`, when the caller recorded them) and the
error series around a labelled trigger with its baseline; then a table of every trigger
and its root causes.

The plots are plotly figures (zoom, pan, hover) with plotly.js inlined once, so the
file works offline and can be mailed or attached to a ticket as is. plotly is imported
by `render` only: a command without `--report` never loads it.

The numbers are `ModelMonitor.snapshot()`s sampled by the caller (`Timeline`) every few
events while it feeds the monitor; the report itself only draws them.

Examples
--------
>>> t = Timeline("m", "regression", x_label="row")
>>> t.sample_features(500, {"columns": {"x": {"ks_statistic": 0.02, "ks_threshold": 0.1}}})
>>> t.sample_labelled(500, {"mae": 0.4, "r2": 0.8, "rmse": 0.5, "accuracy": float("nan")})
>>> html = render("demo", [("rows", "500")], [t], [])
>>> html.startswith("<!DOCTYPE html>") and html.count('class="plotly-graph-div"') == 1
True
"""

from __future__ import annotations

import datetime as dt
import html
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import UsageError

if TYPE_CHECKING:
    from detectors import DetectorConfig, ReferenceProfile

MAX_POINTS = 4000  # per line; longer series are thinned evenly before drawing
MAX_TRIGGER_DETAILS = 30  # triggers with their own distribution and error panels
BINS = 40  # histogram bins of a numeric column's reference and window
ERROR_CONTEXT = 60  # labelled samples shown before a labelled trigger (20 after)
_PERFORMANCE = {"regression": ("r2", "rmse"), "classification": ("accuracy",)}
_LABELS = {"mae": "MAE (error)", "r2": "R²", "rmse": "RMSE", "accuracy": "accuracy"}
SEVERITY_COLOURS = {"LOW": "#868e96", "MEDIUM": "#f08c00", "HIGH": "#e8590c", "CRITICAL": "#c92a2a"}
REFERENCE_COLOUR, WINDOW_COLOUR, SERIES_COLOUR = "#1c7ed6", "#f76707", "#2b8a3e"
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Distribution:
    """A column's reference values (for a categorical column, or its count per level)
    against the window's at a trigger."""

    kind: str  # "numeric" or "categorical"
    reference: Sequence[Any] | Mapping[str, int]
    window: Sequence[Any]


def column_distributions(profile: ReferenceProfile, config: DetectorConfig, columns: Iterable[str],
                         recent: Mapping[str, Sequence[Any]]) -> dict[str, Distribution]:
    """The named columns' reference against the window the monitor tested at a trigger:
    a numeric column's reference sample (the profile's, at most `config.reference_cap`
    values) against its last `config.ks_window` values, a categorical column's reference
    counts against its last `config.categorical_window`. `recent[column]`: the column's
    values of the events up to and including the trigger's, in event order (NaN or None
    for a missing value, left out). Columns the profile does not monitor are skipped.

    >>> import numpy as np
    >>> from detectors import DetectorConfig, ReferenceProfile
    >>> import pandas as pd
    >>> p = ReferenceProfile.from_frame(pd.DataFrame({"x": [0.0, 1.0, 2.0], "c": ["a", "b", "a"]}))
    >>> d = column_distributions(p, DetectorConfig(ks_window=2, categorical_window=2), ["x", "c", "other"],
    ...                          {"x": [5.0, None, 7.0], "c": ["b", None, "b"]})
    >>> d["x"].reference.tolist(), d["x"].window.tolist(), d["c"].reference, d["c"].window
    ([0.0, 1.0, 2.0], [7.0], {'a': 2, 'b': 1}, ['b'])
    """
    import numpy as np

    out: dict[str, Distribution] = {}
    for name in columns:
        if name in profile.numeric_columns:
            values = np.asarray(_last(recent[name], config.ks_window), dtype=np.float64)
            out[name] = Distribution("numeric", profile.samples[profile.numeric_columns.index(name)],
                                     values[np.isfinite(values)])
        elif name in profile.categorical_columns:
            values = [str(v) for v in _last(recent[name], config.categorical_window) if not _missing(v)]
            out[name] = Distribution("categorical", dict(profile.categories[name]), values)
    return out


def _last(values: Sequence[Any], n: int) -> Sequence[Any]:
    return values[max(0, len(values) - n):]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass
class Mark:
    """A trigger on the time axis of its model's plots."""

    x: Any
    source: str  # "features" or "labelled"
    columns: list[str]
    severity: str
    reason: str = ""
    types: list[str] = field(default_factory=list)
    confidence: float = math.nan
    offset: Any = None
    distributions: dict[str, Distribution] = field(default_factory=dict)


@dataclass
class Timeline:
    """Sampled snapshots of one model's monitor, in the order they were taken."""

    model_id: str
    task: str
    x_label: str = "event"
    feature_x: list[Any] = field(default_factory=list)
    # column -> (kind, statistics, thresholds); kind "KS" or "chi²", and the prediction
    # drift's and the multivariate signal's curves
    columns: dict[str, tuple[str, list[float], list[float]]] = field(default_factory=dict)
    labelled_x: list[Any] = field(default_factory=list)
    labelled: dict[str, list[float]] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)  # r2, rmse, accuracy, mae
    marks: list[Mark] = field(default_factory=list)
    # Labelled events the monitor learns its error baseline from (its snapshot shows 0
    # for them, not a measurement): drawn as gaps. `DetectorConfig.concept_baseline_size`.
    labelled_warmup: int = 0
    # The serial dependence the monitor is calibrated to, per column
    # (`detectors.api.column_dependence`): the table "Serial dependence per column".
    dependence: dict[str, Any] | None = None
    # metric (accuracy, mae) -> its estimate without labels at each feature sample
    # (a model with CBPE or DLE), drawn beside the realized value
    estimated: dict[str, list[float]] = field(default_factory=dict)
    # column -> the share of its values missing (and, categorical, of unseen levels) in
    # the last batch at each sample: the section "Data quality"
    missing: dict[str, list[float]] = field(default_factory=dict)
    unseen: dict[str, list[float]] = field(default_factory=dict)

    def sample_features(self, x: Any, snapshot: dict[str, Any]) -> None:
        self.feature_x.append(x)
        for metric in ("accuracy", "mae"):
            if f"estimated_{metric}" in snapshot:
                self.estimated.setdefault(metric, []).append(float(snapshot[f"estimated_{metric}"]))
        for name, column in snapshot["columns"].items():
            for key, series in (("missing_share", self.missing), ("unseen_share", self.unseen)):
                if key in column:
                    series.setdefault(name, []).append(float(column[key]))
            if "ks_statistic" in column:
                kind, stat, threshold = "KS", column["ks_statistic"], column["ks_threshold"]
            else:
                kind, stat, threshold = "chi²", column["chi2_statistic"], column["chi2_threshold"]
            entry = self.columns.setdefault(name, (kind, [], []))
            entry[1].append(float(stat))
            entry[2].append(float(threshold))
        # the signals over the model's outputs and over all numeric columns at once
        for name, kind, stat, threshold in (
                ("prediction", "prediction drift", "prediction_drift_statistic", None),
                ("numeric columns together", "multivariate", "multivariate_statistic",
                 "multivariate_threshold")):
            if stat in snapshot:
                entry = self.columns.setdefault(name, (kind, [], []))
                entry[1].append(float(snapshot[stat]))
                entry[2].append(float(snapshot[threshold]) if threshold else 1.0)

    def sample_labelled(self, x: Any, snapshot: dict[str, Any]) -> None:
        self.labelled_x.append(x)
        warm = snapshot.get("labelled_seen", math.inf) > self.labelled_warmup
        for key in ("mae", *_PERFORMANCE[self.task]):
            self.labelled.setdefault(key, []).append(float(snapshot.get(key, math.nan)) if warm else math.nan)
        for key in ("r2", "rmse", "accuracy"):
            value = snapshot.get(f"baseline_{key}")
            if value is not None and math.isfinite(value):
                self.baseline[key] = float(value)

    def mark(self, x: Any, trigger: dict[str, Any], distributions: dict[str, Distribution] | None = None) -> None:
        """A trigger (its JSON line) at `x`; `distributions`: its named columns'
        reference and window values, for the per-trigger panels."""
        self.marks.append(Mark(
            x, trigger["source"], list(trigger["columns"]), trigger["severity"], trigger.get("reason", ""),
            [str(t) for t in trigger.get("trigger_types", [])], float(trigger.get("confidence", math.nan)),
            trigger.get("offset"), dict(distributions or {}),
        ))


def write_report(
    path: str | Path, title: str, summary: Sequence[tuple[str, str]], timelines: Sequence[Timeline],
    triggers: Sequence[dict[str, Any]], policies: PolicyChart | None = None,
) -> None:
    text = render(title, summary, timelines, triggers, policies)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror})") from None


def render(
    title: str, summary: Sequence[tuple[str, str]], timelines: Sequence[Timeline],
    triggers: Sequence[dict[str, Any]], policies: PolicyChart | None = None,
) -> str:
    """The report as one HTML document; `triggers` are the JSON lines written; with
    `policies` (`driftline backtest --retrain`), their served metric first."""
    from plotly.offline import get_plotlyjs

    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<script>{_ERROR_PROBE}</script>",
        f"<script>{get_plotlyjs()}</script>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="summary">',
        *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary),
        "</table>",
        '<p class="legend">Severity: ' + " ".join(
            f'<span class="sev {s}">&#9670; {s}</span>' for s in SEVERITY_COLOURS) + "</p>",
    ]
    if policies is not None:
        parts.append('<section class="policies"><h2>The served model, policy by policy</h2>')
        parts.append(_html(_policies(policies), "policies"))
        parts.append("</section>")
    for timeline in timelines:
        parts.append(f'<section class="model"><h2>Model {esc(timeline.model_id)}</h2>')
        if timeline.feature_x or timeline.labelled_x or timeline.marks:
            parts.append(_html(_overview(timeline), f"overview-{timeline.model_id}"))
        if not (timeline.feature_x and timeline.columns):
            parts.append('<p class="none">No feature events in this run.</p>')
        if not (timeline.labelled_x and any(_finite(v) for v in timeline.labelled.values())):
            parts.append('<p class="none">No labelled events (predictions with actuals) in this run.</p>')
        if timeline.dependence is not None:
            parts.append(_dependence_table(timeline.dependence))
        parts.extend(_data_quality(timeline, [t for t in triggers
                                              if t.get("model_id", timeline.model_id) == timeline.model_id]))
        parts.extend(_trigger_details(timeline))
        parts.append("</section>")
    parts.append(f"<h2>Triggers ({len(triggers)})</h2>")
    parts.append(_trigger_table(triggers))
    parts.append(f"<script>{_RENDER_PROBE}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


@dataclass
class PolicyChart:
    """Each policy's served metric over time (`series`: name -> (rows, values)) and its
    retrains (dicts with row, outcome, training_rows [first, last] or None, reason)."""

    metric: str
    window: int  # labelled rows the metric is taken over
    series: dict[str, tuple[list[int], list[float]]]
    retrains: dict[str, list[dict[str, Any]]]


_POLICY_COLOURS = ("#1c7ed6", "#868e96", "#2b8a3e", "#e8590c", "#ae3ec9", "#f08c00", "#0c8599")


# -- figures -----------------------------------------------------------------------------
def _policies(chart: PolicyChart):
    """The served metric of every policy on one axis, each retrain marked on its line
    (filled: promoted), and below, each retrain's training window as a bar."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(chart.series)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.7, 0.3],
                           subplot_titles=[f"{chart.metric} over the last {chart.window} labelled rows",
                                           "training windows (rows) of each retrain"])
    for k, name in enumerate(names):
        colour = _POLICY_COLOURS[k % len(_POLICY_COLOURS)]
        xs, ys = chart.series[name]
        figure.add_trace(go.Scatter(x=_thin(xs), y=_thin(ys), mode="lines", name=name, legendgroup=name,
                                    line={"color": colour, "width": 1.5}), row=1, col=1)
        retrains = chart.retrains.get(name, [])
        if not retrains:
            continue
        at = [min(max(0, _position(xs, r["row"])), len(ys) - 1) for r in retrains] if ys else []
        figure.add_trace(go.Scatter(
            x=[r["row"] for r in retrains], y=[ys[i] if ys else None for i in at], mode="markers",
            name=f"{name} retrains", legendgroup=name, showlegend=False,
            marker={"symbol": ["triangle-up" if r["outcome"] == "promoted" else "triangle-up-open" for r in retrains],
                    "size": 10, "color": colour},
            hovertext=[f"{name} row {r['row']}: {r['outcome']}<br>{html.escape(str(r['reason']))}" for r in retrains],
            hoverinfo="text"), row=1, col=1)
        for j, r in enumerate(retrains):
            if r.get("training_rows"):
                first, last = r["training_rows"]
                lane = k + 0.12 * (j % 6)  # overlapping windows one above the other
                figure.add_trace(go.Scatter(
                    x=[first, last], y=[lane, lane], mode="lines+markers", showlegend=False, legendgroup=name,
                    line={"color": colour, "width": 6 if r["outcome"] == "promoted" else 2},
                    hovertext=f"retrain at row {r['row']} ({r['outcome']}): trained on rows {first}-{last}",
                    hoverinfo="text"), row=2, col=1)
    figure.update_yaxes(tickvals=list(range(len(names))), ticktext=names, autorange="reversed", row=2, col=1)
    figure.update_xaxes(title_text="row", row=2, col=1)
    figure.update_layout(height=620, margin={"l": 80, "r": 20, "t": 40, "b": 40}, hovermode="closest",
                         template="plotly_white")
    return figure


def _position(xs: Sequence[int], x: int) -> int:
    import bisect

    return bisect.bisect_left(list(xs), x)


def _overview(t: Timeline):
    """Trigger lane, drift statistics, error and performance on one shared time axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    perf = [k for k in _PERFORMANCE[t.task] if k in t.labelled and _finite(t.labelled[k])]
    labelled = [k for k in ("mae", *perf) if k in t.labelled and _finite(t.labelled[k])]
    rows = [("triggers", 0.6)]
    if t.feature_x and t.columns:
        rows.append(("drift statistic ÷ threshold (1 = threshold)", 2.0))
    estimated = [k for k in t.estimated if _finite(t.estimated[k])]
    rows += [(f"{_LABELS[k]} estimated without labels, beside the realized", 1.2) for k in estimated]
    rows += [(_LABELS[k] + (" against its baseline" if k in t.baseline else ""), 1.2) for k in labelled]
    total = sum(h for _, h in rows)
    figure = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06 if len(rows) > 1 else 0,
                           row_heights=[h / total for _, h in rows], subplot_titles=[name for name, _ in rows])
    # the lane: one trace per severity, so the legend names them
    for severity, colour in SEVERITY_COLOURS.items():
        marks = [m for m in t.marks if m.severity == severity]
        if not marks:
            continue
        figure.add_trace(go.Scatter(
            x=[m.x for m in marks], y=[m.source for m in marks], mode="markers", name=f"trigger {severity}",
            legendgroup="triggers", marker={"symbol": "diamond", "size": 11, "color": colour,
                                            "line": {"width": 0.5, "color": "#222"}},
            hovertext=[_mark_text(m) for m in marks], hoverinfo="text+x"), row=1, col=1)
    figure.update_yaxes(categoryorder="array", categoryarray=["labelled", "features"], row=1, col=1,
                        range=[-0.7, 1.7], type="category")
    row = 2
    if t.feature_x and t.columns:
        x = _thin(t.feature_x)
        for name, (kind, stats, thresholds) in t.columns.items():
            ratio = [s / h if h and math.isfinite(h) and h > 0 else math.nan for s, h in zip(stats, thresholds)]
            figure.add_trace(go.Scatter(
                x=x, y=_thin(ratio), mode="lines", name=f"{name} ({kind})", line={"width": 1.3},
                customdata=list(zip(_thin(stats), _thin(thresholds))),
                hovertemplate=f"{html.escape(name)}: {kind} %{{customdata[0]:.4f}}, threshold %{{customdata[1]:.4f}}"
                              "<extra></extra>"), row=row, col=1)
        figure.add_hline(y=1.0, line={"dash": "dash", "color": "#555", "width": 1}, row=row, col=1)
        row += 1
    for key in estimated:
        figure.add_trace(go.Scatter(x=_thin(t.feature_x), y=_thin(t.estimated[key]), mode="lines",
                                    name=f"estimated {_LABELS[key]}", line={"color": "#d62728", "width": 1.3}),
                         row=row, col=1)
        if key in t.labelled and _finite(t.labelled[key]):
            figure.add_trace(go.Scatter(x=_thin(t.labelled_x), y=_thin(t.labelled[key]), mode="lines",
                                        name=f"realized {_LABELS[key]}", line={"color": SERIES_COLOUR, "width": 1}),
                             row=row, col=1)
        row += 1
    for key in labelled:
        x = _thin(t.labelled_x)
        figure.add_trace(go.Scatter(x=x, y=_thin(t.labelled[key]), mode="lines", name=_LABELS[key],
                                    line={"color": SERIES_COLOUR, "width": 1.3}), row=row, col=1)
        if key in t.baseline:
            figure.add_trace(go.Scatter(
                x=[x[0], x[-1]], y=[t.baseline[key]] * 2, mode="lines", name=f"baseline {_LABELS[key]}",
                line={"color": "#555", "dash": "dash", "width": 1}), row=row, col=1)
        row += 1
    figure.update_xaxes(title_text=t.x_label, row=len(rows), col=1)
    figure.update_layout(height=170 + 150 * sum(h for _, h in rows), margin={"l": 60, "r": 20, "t": 40, "b": 40},
                         hovermode="closest", legend={"orientation": "v"}, template="plotly_white")
    return figure


def _data_quality(t: Timeline, triggers: Sequence[dict[str, Any]]) -> list[str]:
    """The section "Data quality": the missing share of every column that had a missing
    value, and the unseen-level share of every categorical column that had one, over
    time; the new levels the triggers named."""
    import plotly.graph_objects as go

    parts = ["<h3>Data quality</h3>"]
    shown = {f"{name} missing": v for name, v in t.missing.items() if any(x > 0 for x in v)}
    shown.update({f"{name} unseen levels": v for name, v in t.unseen.items() if any(x > 0 for x in v)})
    if not shown:
        parts.append('<p class="none">No value missing and no unseen level in the sampled batches.</p>')
    else:
        figure = go.Figure()
        x = _thin(t.feature_x)
        for name, values in shown.items():
            figure.add_trace(go.Scatter(x=x, y=_thin(values), mode="lines", name=name, line={"width": 1.3}))
        figure.update_layout(height=320, margin={"l": 60, "r": 20, "t": 30, "b": 40}, template="plotly_white",
                             yaxis={"title": "share of the batch", "tickformat": ".0%"},
                             xaxis={"title": t.x_label})
        parts.append(_html(figure, f"quality-{_safe_id(t.model_id)}"))
    levels = [(tr["offset"], c["column"], level, share) for tr in triggers for c in tr.get("root_cause", [])
              if c.get("signal") == "unseen_category" for level, share in (c.get("detail") or {}).get("levels", {}).items()]
    if levels:
        esc = html.escape
        parts.append('<table class="levels"><thead><tr><th>trigger offset</th><th>column</th><th>new level</th>'
                     "<th>share</th></tr></thead><tbody>")
        parts.extend(f"<tr><td>{esc(str(o))}</td><td>{esc(str(c))}</td><td>{esc(str(lv))}</td><td>{sh:.1%}</td></tr>"
                     for o, c, lv, sh in levels)
        parts.append("</tbody></table>")
    return parts


def _trigger_details(t: Timeline) -> list[str]:
    parts: list[str] = []
    shown = t.marks[:MAX_TRIGGER_DETAILS]
    if not shown:
        return parts
    more = f" (the first {len(shown)} of {len(t.marks)})" if len(t.marks) > len(shown) else ""
    parts.append(f"<h3>Per trigger{more}</h3>")
    for k, mark in enumerate(shown, 1):
        where = f"{t.x_label} {_text(mark.x)}"
        parts.append(
            f'<div class="trigger"><h4>{k}. <span class="sev {html.escape(mark.severity)}">'
            f"{html.escape(mark.severity)}</span> at {html.escape(where)}: {html.escape(mark.reason)}</h4>")
        figures = []
        if mark.distributions:
            figures.append(_distributions(mark))
        elif mark.columns:
            parts.append('<p class="none">The columns\' distributions were not recorded by this run.</p>')
        if mark.source == "labelled" and "mae" in t.labelled:
            figures.append(_error_around(t, mark))
        for n, figure in enumerate(f for f in figures if f is not None):
            parts.append(_html(figure, f"trigger-{t.model_id}-{k}-{n}"))
        parts.append("</div>")
    return parts


def _distributions(mark: Mark):
    """The named columns' reference against the window: densities over shared bins."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(mark.distributions)
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for j, name in enumerate(names, 1):
        d = mark.distributions[name]
        first = j == 1
        if d.kind == "numeric":
            ref = np.asarray(d.reference, dtype=float)
            win = np.asarray(d.window, dtype=float)
            ref, win = ref[np.isfinite(ref)], win[np.isfinite(win)]
            both = np.concatenate([ref, win])
            if not len(both):
                continue
            edges = np.histogram_bin_edges(both, bins=BINS)
            centres, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0]) if len(edges) > 1 else 1.0
            for values, label, colour in ((ref, "reference", REFERENCE_COLOUR), (win, "window", WINDOW_COLOUR)):
                density = np.histogram(values, bins=edges, density=True)[0] if len(values) else np.zeros(len(centres))
                figure.add_trace(go.Bar(x=centres, y=density, width=width, name=label, legendgroup=label,
                                        showlegend=first, marker={"color": colour}, opacity=0.55,
                                        hovertemplate=f"{label}: %{{y:.3f}} at %{{x:.3g}}<extra></extra>"),
                                 row=1, col=j)
        else:
            ref = _shares(d.reference)
            win = _shares(d.window)
            levels = sorted(set(ref) | set(win), key=lambda v: -(ref.get(v, 0) + win.get(v, 0)))[:30]
            for shares, label, colour in ((ref, "reference", REFERENCE_COLOUR), (win, "window", WINDOW_COLOUR)):
                figure.add_trace(go.Bar(x=levels, y=[shares.get(v, 0.0) for v in levels], name=label,
                                        legendgroup=label, showlegend=first, marker={"color": colour}),
                                 row=1, col=j)
    figure.update_layout(barmode="overlay", height=300, margin={"l": 50, "r": 20, "t": 40, "b": 30},
                         template="plotly_white", title_text="reference against the window (density)",
                         title_font_size=13)
    return figure


def _error_around(t: Timeline, mark: Mark):
    """The error series before and after a labelled trigger, with its baseline."""
    import bisect

    import plotly.graph_objects as go

    at = bisect.bisect_left(t.labelled_x, mark.x) if _sortable(t.labelled_x, mark.x) else len(t.labelled_x) - 1
    lo, hi = max(0, at - ERROR_CONTEXT), min(len(t.labelled_x), at + ERROR_CONTEXT // 3)
    x, y = t.labelled_x[lo:hi], t.labelled["mae"][lo:hi]
    if not x:
        return None
    figure = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers", name=_LABELS["mae"], marker={"size": 3},
                                  line={"color": SERIES_COLOUR}))
    if "mae" in t.baseline:
        figure.add_trace(go.Scatter(x=[x[0], x[-1]], y=[t.baseline["mae"]] * 2, mode="lines", name="baseline MAE",
                                    line={"color": "#555", "dash": "dash"}))
    figure.add_vline(x=mark.x, line={"color": SEVERITY_COLOURS.get(mark.severity, "#c92a2a"), "width": 2})
    figure.update_layout(height=260, margin={"l": 50, "r": 20, "t": 40, "b": 30}, template="plotly_white",
                         title_text="error around the trigger", title_font_size=13, xaxis_title=t.x_label)
    return figure


def _shares(values: Iterable[Any] | Mapping[str, int]) -> dict[str, float]:
    """Each level's share: of values, or of counts per level."""
    if isinstance(values, Mapping):
        counts = {str(k): int(n) for k, n in values.items()}
    else:
        counts = {}
        for value in values:
            if _missing(value):
                continue
            counts[str(value)] = counts.get(str(value), 0) + 1
    total = sum(counts.values()) or 1
    return {k: n / total for k, n in counts.items()}


def _sortable(xs: Sequence[Any], x: Any) -> bool:
    try:
        return bool(xs) and (xs[0] <= x or x <= xs[0])
    except TypeError:
        return False


def _mark_text(m: Mark) -> str:
    columns = f"<br>columns: {', '.join(m.columns)}" if m.columns else ""
    confidence = f", confidence {m.confidence:.2f}" if math.isfinite(m.confidence) else ""
    return html.escape(f"{m.severity}{confidence} ({m.source})") + html.escape(columns).replace("&lt;br&gt;", "<br>") \
        + "<br>" + html.escape(m.reason)


def _html(figure, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=_safe_id(div_id), config=_PLOT_CONFIG)


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _thin(values: Sequence[Any]) -> Sequence[Any]:
    if len(values) <= MAX_POINTS:
        return list(values)
    step = math.ceil(len(values) / MAX_POINTS)
    return list(values[::step]) + ([values[-1]] if (len(values) - 1) % step else [])


def _finite(values: Iterable[float]) -> bool:
    return any(math.isfinite(v) for v in values)


# Script errors are recorded on the page (the browser test reads them back); once loaded,
# the page says how many plots drew.
_ERROR_PROBE = (
    "window.driftlineErrors=[];window.addEventListener('error',function(e){window.driftlineErrors.push("
    "String(e.message||e));document.documentElement.setAttribute('data-script-errors',"
    "window.driftlineErrors.join(' | '));});"
)
_RENDER_PROBE = (
    "window.addEventListener('load',function(){var d=document.querySelectorAll('.plotly-graph-div');"
    "var n=0;d.forEach(function(x){if(x.querySelector('.main-svg'))n++;});"
    "document.documentElement.setAttribute('data-plots',d.length);"
    "document.documentElement.setAttribute('data-plots-drawn',n);});"
)


# -- serial dependence ---------------------------------------------------------------------
_SOURCES = {
    "reference": "estimated from the time-ordered reference",
    "warmup": "learnt from the stream's first events",
    "pending": "being learnt from the stream's first events (1 meanwhile)",
    "none": "independence assumed (a state saved before dependence was estimated)",
    "shuffled": "not estimated: the reference is not in time order",
    "short": "not estimated: too few reference values",
}


def _dependence_table(dependence: dict[str, Any]) -> str:
    """The long-run variance factor of each column (and of the error series), the
    reference's effective sample size, and where each factor comes from."""
    esc = html.escape
    head = ["column", "factor", "KS factor", "lag-1 autocorrelation", "reference rows", "effective sample size",
            "source"]
    rows = ['<h3>Serial dependence per column</h3>',
            '<p class="note">The long-run variance factor: 1 for independent events; n events count as '
            "n / factor independent ones in every test the monitor runs, so a dependent column needs more "
            "evidence to trigger.</p>",
            '<table class="dependence"><thead><tr>', *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    entries = list(dependence["columns"].items())
    if _number(dependence.get("errors")) != "":
        entries.append(("(error series)", {"factor": dependence["errors"], "source": dependence["source"]}))
    for name, c in entries:
        source = c.get("source", "")
        cells = [esc(name), _number(c.get("factor"), ".2f"), _number(c.get("ks_factor"), ".2f"),
                 _number(c.get("lag1"), ".2f"), _number(c.get("rows"), ",.0f"),
                 _number(c.get("effective_sample_size"), ",.0f"),
                 esc(source)]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    rows.append("</tbody></table>")
    used = dict.fromkeys(c.get("source", "") for _, c in entries)
    rows.append('<p class="note">' + "; ".join(
        f"{esc(s)}: {esc(_SOURCES[s])}" for s in used if s in _SOURCES) + ".</p>")
    return "\n".join(rows)


def _number(value: Any, spec: str = ".2f") -> str:
    """A number as text; "" for none or NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return ""
    return format(value, spec)


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
            esc(f"{c['signal']}{'(' + c['column'] + ')' if c.get('column') else ''} × {c['strength']:.2f}"
                + (f" {_detail(c['detail'])}" if c.get("detail") else ""))
            for c in t["root_cause"])
        cells = [esc(str(t.get("model_id", ""))), *(esc(_text(t[k])) for k in where_keys),
                 esc(str(t["offset"])), esc(t["source"]),
                 f'<span class="sev {esc(t["severity"])}">{esc(t["severity"])}</span>',
                 f"{t['confidence']:.2f}", esc(", ".join(map(str, t["trigger_types"]))), causes,
                 esc(t["reason"]), f"<code>{esc(str(t.get('trigger_id', '')))}</code>"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _detail(detail: dict[str, Any]) -> str:
    """A data-quality root cause's detail, short: shares as percentages."""
    def one(key: str, value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k} {v:.1%}" for k, v in value.items())
        return f"{key} {value:.1%}" if "share" in key else f"{key} {value:g}"
    return "(" + "; ".join(one(k, v) for k, v in detail.items()) + ")"


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1em;color:#444}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
table.summary th{background:#f4f4f4}
table.triggers thead th{background:#f4f4f4;position:sticky;top:0}
.none{color:#777;font-style:italic}
.trigger{border-top:1px solid #eee;margin-top:.8em}.trigger h4{font-size:.95em;margin:.6em 0 .2em}
.legend{font-size:.9em}.note{font-size:.85em;color:#555;margin:.2em 0}
.sev{font-weight:600}.LOW{color:#868e96}.MEDIUM{color:#f08c00}.HIGH{color:#e8590c}.CRITICAL{color:#c92a2a}
code{font-size:.9em}
""".strip()

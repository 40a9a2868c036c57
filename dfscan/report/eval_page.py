"""`dfscan eval --report DIR`: a self-contained HTML page (no network, figures as inline SVG drawn here) with
the metrics, the likelihood-ratio figures, per-group figures, an ROC, a reliability diagram, Tippett plots
and score histograms per class. Each figure is also written as DIR/<name>.svg."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dfscan.likelihood import VERBAL_SCALE_TEXT
from dfscan.outputs import SVG_MARKER, atomic_write_files

WIDTH, HEIGHT = 460, 320
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 30, 44
REAL_COLOUR, FAKE_COLOUR = "#1e8449", "#c0392b"
LEVEL_COLOURS = {"frame": "#1f77b4", "video": "#ff7f0e"}
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;word-break:break-all} h2{font-size:16px;margin-top:28px} .muted{color:#666}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} .figs{display:flex;flex-wrap:wrap;gap:12px}"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class Chart:
    """A minimal SVG line chart: axes with ticks, lines, step lines, bars, a legend."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float]):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.xlim, self.ylim = xlim, ylim
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, str]] = []

    def x(self, value: float) -> float:
        lo, hi = self.xlim
        return LEFT + (WIDTH - LEFT - RIGHT) * (min(max(value, lo), hi) - lo) / ((hi - lo) or 1.0)

    def y(self, value: float) -> float:
        lo, hi = self.ylim
        return TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - (min(max(value, lo), hi) - lo) / ((hi - lo) or 1.0))

    def line(self, xs: Sequence[float], ys: Sequence[float], colour: str, name: str = "", dash: str = "",
             step: bool = False) -> None:
        points: list[tuple[float, float]] = []
        for i, (px, py) in enumerate(zip(xs, ys)):
            if step and i:
                points.append((self.x(px), points[-1][1]))
            points.append((self.x(px), self.y(py)))
        if len(points) < 2:
            return
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"{dashes}/>')
        if name:
            self.legend.append((name, colour, dash))

    def dots(self, xs: Sequence[float], ys: Sequence[float], colour: str) -> None:
        self.parts.extend(f'<circle cx="{self.x(px):.1f}" cy="{self.y(py):.1f}" r="3" fill="{colour}"/>'
                          for px, py in zip(xs, ys))

    def bars(self, edges: Sequence[float], heights: Sequence[float], colour: str, name: str) -> None:
        for lo, hi, h in zip(edges[:-1], edges[1:], heights):
            x1, x2, y0, y1 = self.x(lo), self.x(hi), self.y(0.0), self.y(h)
            self.parts.append(f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{max(x2 - x1 - 0.5, 0.5):.1f}" '
                              f'height="{max(y0 - y1, 0):.1f}" fill="{colour}" opacity="0.45"/>')
        self.legend.append((name, colour, ""))

    def svg(self) -> str:
        plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
        out = [f'<svg role="img" aria-label="{_esc(self.title)}" width="{WIDTH}" '
               f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">',
               f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
               f'<text x="{WIDTH / 2}" y="18" font-size="13" text-anchor="middle">{_esc(self.title)}</text>',
               f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#bbb"/>']
        for i in range(6):
            xv = self.xlim[0] + (self.xlim[1] - self.xlim[0]) * i / 5
            yv = self.ylim[0] + (self.ylim[1] - self.ylim[0]) * i / 5
            out.append(f'<text x="{self.x(xv):.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="10" '
                       f'text-anchor="middle">{xv:.3g}</text>')
            out.append(f'<text x="{LEFT - 5}" y="{self.y(yv) + 3:.1f}" font-size="10" text-anchor="end">{yv:.3g}</text>')
        out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" font-size="11" text-anchor="middle">'
                   f'{_esc(self.xlabel)}</text>')
        out.append(f'<text x="12" y="{TOP + plot_h / 2}" font-size="11" text-anchor="middle" '
                   f'transform="rotate(-90 12 {TOP + plot_h / 2})">{_esc(self.ylabel)}</text>')
        out.extend(self.parts)
        for n, (name, colour, dash) in enumerate(self.legend):
            ly = TOP + 12 + 14 * n
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{LEFT + 8}" x2="{LEFT + 26}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                       f'stroke-width="2.5"{dashes}/><text x="{LEFT + 30}" y="{ly + 4}" font-size="10">{_esc(name)}</text>')
        out.append("</svg>")
        return "".join(out)


# --- the figures ------------------------------------------------------------------------------------------

def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0,0) to (1,1)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tps, fps = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    n_fake, n_real = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fps / n_real], np.r_[0.0, tps / n_fake]


def roc_chart(levels: dict[str, tuple[np.ndarray, np.ndarray]]) -> Chart:
    chart = Chart("ROC", "false-positive rate (real called fake)", "true-positive rate", (0, 1), (0, 1))
    chart.line([0, 1], [0, 1], "#999", dash="4,4")
    for level, (scores, labels) in levels.items():
        fpr, tpr = roc_points(scores, labels)
        chart.line(fpr, tpr, LEVEL_COLOURS[level], level)
    return chart


def reliability_chart(levels: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Chart:
    chart = Chart("reliability diagram", "predicted fake probability (bin mean)", "observed fake fraction",
                  (0, 1), (0, 1))
    chart.line([0, 1], [0, 1], "#999", dash="4,4")
    for level, (scores, labels) in levels.items():
        index = np.clip((scores * bins).astype(int), 0, bins - 1)
        xs = [float(scores[index == b].mean()) for b in range(bins) if (index == b).any()]
        ys = [float(labels[index == b].mean()) for b in range(bins) if (index == b).any()]
        chart.line(xs, ys, LEVEL_COLOURS[level], level)
        chart.dots(xs, ys, LEVEL_COLOURS[level])
    return chart


def tippett_chart(level: str, labels: np.ndarray, curves: dict[str, np.ndarray]) -> Chart:
    """Proportion of fake (Hp true) and of real (Hd true) items whose log10 LR is at least x."""
    everything = np.concatenate(list(curves.values()))
    lo, hi = float(np.floor(everything.min() - 0.5)), float(np.ceil(everything.max() + 0.5))
    chart = Chart(f"Tippett plot ({level})", "log10 LR", "proportion with log10 LR >= x", (lo, hi), (0, 1))
    grid = np.linspace(lo, hi, 241)
    chart.line([0, 0], [0, 1], "#999", dash="2,3")
    for (name, values), dash in zip(curves.items(), ("", "6,3")):
        for cls, colour, word in ((1, FAKE_COLOUR, "fake"), (0, REAL_COLOUR, "real")):
            chosen = np.sort(values[labels == cls])
            if len(chosen):
                share = 1.0 - np.searchsorted(chosen, grid, side="left") / len(chosen)
                chart.line(grid, share, colour, f"{word} ({name})", dash=dash)
    return chart


def histogram_chart(level: str, scores: np.ndarray, labels: np.ndarray, bins: int = 20) -> Chart:
    edges = np.linspace(0.0, 1.0, bins + 1)
    real = np.histogram(scores[labels == 0], edges)[0] / max(int((labels == 0).sum()), 1)
    fake = np.histogram(scores[labels == 1], edges)[0] / max(int((labels == 1).sum()), 1)
    chart = Chart(f"scores per class ({level})", "fake probability", "fraction of the class",
                  (0, 1), (0, float(max(real.max(initial=0), fake.max(initial=0)) * 1.1 or 1.0)))
    chart.bars(edges, real, REAL_COLOUR, f"real (n={int((labels == 0).sum())})")
    chart.bars(edges, fake, FAKE_COLOUR, f"fake (n={int((labels == 1).sum())})")
    return chart


# --- the page ---------------------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else _esc(value)


def _metrics_table(result: Any) -> str:
    from dfscan.evaluate import METRIC_ROWS  # noqa: PLC0415

    levels = [(name, m) for name, m in (("frame", result.frame), ("video", result.video)) if m]
    head = "".join(f"<th>{name}</th>" for name, _ in levels)
    rows = "".join(f"<tr><td>{key}</td>{''.join(f'<td>{_fmt(m.get(key))}</td>' for _, m in levels)}</tr>"
                   for key in METRIC_ROWS)
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def _lr_table(summary: dict[str, Any]) -> str:
    columns = [(level, kind) for level in ("frame", "video") if level in summary
               for kind in ("cross_validated", "bundle") if kind in summary[level]]
    head = "".join(f"<th>{level} ({'cross-validated' if kind == 'cross_validated' else 'bundle calibrator'})</th>"
                   for level, kind in columns)
    rows = "".join(f"<tr><td>{key}</td>{''.join(f'<td>{_fmt(summary[lv][k].get(key))}</td>' for lv, k in columns)}</tr>"
                   for key in ("cllr", "cllr_min", "cllr_cal", "n_real", "n_fake"))
    notes = sorted({n for level in ("frame", "video") if level in summary for n in summary[level]["notes"]})
    return (f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"
            + "".join(f"<p class='muted'>{_esc(n)}</p>" for n in notes))


def _group_table(groups: dict[str, Any], column: str) -> str:
    names: list[str] = next((list(s["at"]) for lv in groups.values() for s in lv.values()), [])
    head = "".join(f"<th>{_esc(n)} FPR / TPR</th>" for n in names)
    rows = ""
    for level, per_group in groups.items():
        for group, s in per_group.items():
            rates = "".join(f"<td>{_fmt(s['at'][n]['fpr'])} / {_fmt(s['at'][n]['tpr'])}</td>" for n in names)
            rows += (f"<tr><td>{level}</td><td>{_esc(group)}</td><td>{s['n']}</td><td>{s['n_real']}</td>"
                     f"<td>{s['n_fake']}</td><td>{_fmt(s['auc'])}</td>{rates}</tr>")
    return (f"<table><tr><th>level</th><th>{_esc(column)}</th><th>n</th><th>real</th><th>fake</th><th>AUC</th>"
            f"{head}</tr>{rows}</table>")


# The figures a page may have, each also written as DIR/<name>.svg (which of them depends on the data).
FIGURES = ("roc", "reliability", "tippett_frame", "tippett_video", "histogram_frame", "histogram_video")


def write_eval_report(out_dir: str | Path, result: Any, lrs: dict[str, dict[str, Any]]) -> Path:
    """Write DIR/index.html and DIR/<figure>.svg for an EvalResult with its items (and, when present, its
    likelihood-ratio summary and per-group figures); `lrs` per level as `dfscan.eval_report.add_lr_and_groups`
    returns them."""
    lr_summary = result.likelihood_ratio
    groups = (result.groups or {}).get("levels")
    group_column = (result.groups or {}).get("column")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    levels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for level in ("frame", "video"):
        chosen = [i for i in result.items if i.level == level and i.score is not None]
        if chosen:
            levels[level] = (np.asarray([float(i.score) for i in chosen]),
                             np.asarray([int(i.label == "fake") for i in chosen]))
    charts: dict[str, Chart] = {}
    if levels:
        charts["roc"] = roc_chart(levels)
        charts["reliability"] = reliability_chart(levels)
    for level, data in lrs.items():
        curves = {name: data[key] for name, key in (("cross-validated", "cross_validated"), ("bundle", "bundle"))
                  if data.get(key) is not None and len(data[key])}
        if curves:
            charts[f"tippett_{level}"] = tippett_chart(level, data["labels"], curves)
    for level, (scores, labels) in levels.items():
        charts[f"histogram_{level}"] = histogram_chart(level, scores, labels)
    files: dict[Path, str | bytes] = {}
    for name, chart in charts.items():
        # a standalone SVG file needs its namespace; inline in HTML it needs none (and the page names no URL)
        standalone = SVG_MARKER + "\n" + chart.svg().replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
        files[out_dir / f"{name}.svg"] = standalone
    model = result.model or {}
    sections = [
        f"<h1>dfscan eval: {_esc(result.data)} [{_esc(result.split or 'all')}]</h1>",
        f"<p class='muted'>model {_esc(model.get('name', ''))} {_esc(model.get('version', ''))} "
        f"(sha256 {_esc(model.get('sha256', ''))}); threshold {_fmt(result.threshold)} ({_esc(result.threshold_name)}); "
        f"video rule {_esc(result.aggregation)}</p>",
        "<h2>Metrics</h2>", _metrics_table(result),
    ]
    if lr_summary:
        sections += [
            "<h2>Likelihood ratios</h2>",
            "<p>Cllr (bits) is the cost of the LRs as evidence: 0 is perfect, 1 is a system that always says "
            "LR = 1. Cllr_min is what the best monotone re-mapping of these LRs on this very set would cost "
            "(discrimination); Cllr_cal = Cllr - Cllr_min is the cost of miscalibration. Cross-validated: each "
            f"item's LR comes from a calibrator fitted on the other folds (grouped by source video). {_esc(VERBAL_SCALE_TEXT)}.</p>",
            _lr_table(lr_summary)]
    if groups:
        sections += [f"<h2>Per {_esc(group_column)}</h2>", _group_table(groups, group_column or "group")]
    sections += ["<h2>Figures</h2>", "<div class='figs'>" + "".join(c.svg() for c in charts.values()) + "</div>"]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>dfscan eval</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}"
            f"<p class='muted'>Each figure is also in this folder: {_esc(', '.join(f'{n}.svg' for n in charts))}</p>"
            "</body></html>")
    path = out_dir / "index.html"
    files[path] = page
    atomic_write_files(files)  # new files: never written through a link, and the page with its figures or none
    return path

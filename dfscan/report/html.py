"""Self-contained HTML reports: no network, no external URL, images embedded as data URIs, the
timeline drawn as inline SVG. One page per video; for a batch scan, an index sorted by score."""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from dfscan.likelihood import explanation, format_lr
from dfscan.inputs import path_key
from dfscan.outputs import REPORT_INDEX, REPORT_ROWS, atomic_write_text
from dfscan.results import VideoResult, escape_text, lr_cell, unescape_text

GENERATOR = '<meta name="generator" content="dfscan">'

COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
LABEL_COLOUR = {"FAKE": "#c0392b", "REAL": "#1e8449", "NO_FACE": "#b7950b", "ERROR": "#7d3c98"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;word-break:break-all} h2{font-size:16px;margin-top:28px}
.verdict{display:inline-block;padding:6px 14px;border-radius:6px;color:#fff;font-weight:700;font-size:22px}
.score{font-size:22px;margin-left:12px} .muted{color:#666} .reason{margin:8px 0;color:#555}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.strip{display:flex;flex-wrap:wrap;gap:6px} .thumb{text-align:center;font-size:11px}
.thumb img{width:72px;height:72px;border:3px solid #ccc;border-radius:4px;display:block}
.thumb.flag img{border-color:#c0392b} pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:8px}
"""


def _esc(value: object) -> str:
    """HTML-escaped text; file names that are not valid UTF-8 are shown with dfscan's lossless escape."""
    return html.escape(escape_text(str(value)), quote=True)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def timeline_svg(result: VideoResult, width: int = 860, height: int = 220) -> str:
    """Per-frame scores of each track over time, the threshold line, suspicious segments shaded."""
    left, right, top, bottom = 40, 10, 10, 30
    duration = (result.video or {}).get("duration_s") or max((f["timestamp"] for f in result.frames), default=1.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + plot_w * min(max(t / duration, 0.0), 1.0)

    def y(s: float) -> float:
        return top + plot_h * (1.0 - s)

    parts = [f'<svg role="img" aria-label="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for seg in result.segments:
        x1, x2 = x(seg["start_s"]), x(seg["end_s"])
        parts.append(f'<rect class="segment" x="{x1 - 3:.1f}" y="{top}" width="{max(x2 - x1, 0) + 6:.1f}" '
                     f'height="{plot_h}" fill="#f5b7b1" opacity="0.6"/>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.2f}</text>')
    for i in range(6):
        t = duration * i / 5
        parts.append(f'<text x="{x(t):.1f}" y="{height - 12}" font-size="10" text-anchor="middle">{t:.1f}s</text>')
    if result.threshold is not None:
        ty = y(result.threshold)
        parts.append(f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
                     f'stroke="#c0392b" stroke-dasharray="6,4"/>')
    for n, track in enumerate(result.tracks):
        colour = COLOURS[n % len(COLOURS)]
        points = [(x(o.timestamp), y(o.score)) for o in track.observations]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>' for px, py in points)
    parts.append("</svg>")
    return "".join(parts)


def _thumb_strip(result: VideoResult, track_index: int) -> str:
    track = result.tracks[track_index]
    cells = []
    for obs in track.observations:
        data = result.thumbnails.get(f"{track.track_id}:{obs.frame_index}")
        flag = " flag" if result.threshold is not None and obs.score >= result.threshold else ""
        img = (f'<img alt="face {track.track_id} frame {obs.frame_index}" '
               f'src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">' if data else "<div>no image</div>")
        cells.append(f'<div class="thumb{flag}">{img}{obs.timestamp:.2f}s<br>{obs.score:.2f}</div>')
    return f'<div class="strip">{"".join(cells)}</div>'


def _provenance(result: VideoResult) -> str:
    video = result.video or {}
    rows = [("file", result.path), ("sha256", video.get("sha256", "")), ("size (bytes)", video.get("size_bytes", "")),
            ("container / codec", f"{video.get('container', '')} / {video.get('codec', '')}"),
            ("resolution", f"{video.get('width', '')}x{video.get('height', '')}"), ("fps", video.get("fps", "")),
            ("duration (s)", video.get("duration_s", "")), ("rotation", video.get("rotation", "")),
            ("truncated", f"yes: {video.get('duration_s')} s decode of {video.get('declared_duration_s')} s declared"
             if video.get("truncated") else "no"),
            ("frames concealed by the decoder", _concealed(result.frames)),
            ("model", f"{(result.model or {}).get('name', '')} {(result.model or {}).get('version', '')}"),
            ("model sha256", (result.model or {}).get("sha256", "")), ("provider", result.provider or ""),
            ("face detector runtime", ((result.settings or {}).get("detector") or {}).get("runtime") or ""),
            ("threshold", f"{_score(result.threshold)} ({result.threshold_name})"), ("aggregation", result.aggregation),
            ("dfscan", result.dfscan_version)]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    frames = ", ".join(f"{f['index']}@{f['timestamp']:.2f}s" for f in result.frames)
    return (f"<table>{body}</table><h3>Frames sampled ({len(result.frames)})</h3><p class='muted'>{_esc(frames)}</p>"
            f"<h3>Settings</h3><pre>{_esc(json.dumps(result.settings, indent=2))}</pre>")


def _concealed(frames: list[dict]) -> str:
    concealed = [f"{f['index']}@{f['timestamp']:.2f}s" for f in frames if f.get("concealed")]
    if not concealed:
        return "none"
    return (f"{len(concealed)} of {len(frames)} sampled ({', '.join(concealed)}): damaged data, part of each picture "
            "filled in by FFmpeg, not read from the file")


def _lr_section(result: VideoResult) -> str:
    return "".join(f"<p>{_esc(paragraph)}</p>" for paragraph in explanation(result.likelihood_ratio))


def render_video_report(result: VideoResult) -> str:
    colour = LABEL_COLOUR.get(result.label, "#555")
    tracks_html = []
    for i, track in enumerate(sorted(range(len(result.tracks)), key=lambda k: -(result.tracks[k].score or -1))):
        t = result.tracks[track]
        lr = format_lr((t.likelihood_ratio or {}).get("lr"))
        tracks_html.append(f"<h3>Face track {t.track_id}: {t.label}, score {_score(t.score)}, LR {lr}, "
                           f"{t.n_faces} faces</h3>"
                           + _thumb_strip(result, track))
    segments = "".join(f"<li>{s['start_s']:.2f}s - {s['end_s']:.2f}s: mean {s['mean_score']:.3f}, "
                       f"max {s['max_score']:.3f} ({s['n_frames']} frames)</li>" for s in result.segments)
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR}<title>dfscan: {_esc(Path(result.path).name)}</title>
<style>{CSS}</style></head><body>
<h1>{_esc(result.path)}</h1>
<div><span class="verdict" style="background:{colour}">{_esc(result.label)}</span>
<span class="score">score {_score(result.score)}</span>
<span class="muted"> threshold {_score(result.threshold)} ({_esc(result.threshold_name)})</span></div>
{f'<p class="reason">{_esc(result.reason)}</p>' if result.reason else ''}
<h2>Strength of evidence: likelihood ratio</h2><div class="lr">{_lr_section(result)}</div>
<h2>Timeline</h2>{timeline_svg(result) if result.frames else '<p class="muted">no frames</p>'}
<h2>Suspicious segments</h2>{f'<ul>{segments}</ul>' if segments else '<p class="muted">none above the threshold</p>'}
<h2>Faces</h2>{''.join(tracks_html) or '<p class="muted">no face tracks</p>'}
<h2>Provenance</h2>{_provenance(result)}
</body></html>"""


def write_video_report(result: VideoResult, path: str | Path) -> Path:
    return atomic_write_text(path, render_video_report(result))


def _page_name(n: int, result: VideoResult) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(escape_text(result.path)).stem)[:60]
    return f"{n:05d}_{stem}.html"


INDEX_LR_NOTE = ("LR: likelihood ratio, how much more probable the score is if the face was manipulated than if it "
                 "is genuine (below 1: shown as 1/x, support for genuine). It is not the probability that the video "
                 "is fake; each video's page says which population it was calibrated on. Empty for videos with no "
                 "score (NO_FACE, ERROR) or a bundle without an LR calibration.")
INDEX_LR_KEYS = ("lr", "log10", "verbal", "bounds", "at_bound", "reason")


class IndexRow(NamedTuple):
    label: str
    score: float | None
    path: str
    reason: str
    page: str
    likelihood_ratio: dict[str, Any] | None  # INDEX_LR_KEYS of the video's record; None in rows of older indexes


def _index_lr(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if record is None else {key: record.get(key) for key in INDEX_LR_KEYS}


def _index_lr_cells(record: dict[str, Any] | None) -> str:
    """LR, log10 LR, verbal and bounds cells; the LR cell carries the CSV's lr / log10_lr values as data
    attributes. Empty cells when there is no LR (the reason is the LR cell's tooltip)."""
    if not record or record.get("lr") is None:
        reason = (record or {}).get("reason") or "no likelihood ratio"
        return (f'<td class="lr" title="{_esc(reason)}"></td><td class="log10-lr"></td><td class="verbal"></td>'
                '<td class="lr-bounds"></td>')
    low, high = record["bounds"]
    bound = " (at the bound)" if record.get("at_bound") else ""
    return (f'<td class="lr" data-lr="{lr_cell(record, "lr")}" data-log10-lr="{lr_cell(record, "log10")}">'
            f'{_esc(format_lr(record["lr"]))}</td><td class="log10-lr">{record["log10"]:+.2f}</td>'
            f'<td class="verbal">{_esc(record["verbal"])}{bound}</td>'
            f'<td class="lr-bounds">{_esc(format_lr(low))} to {_esc(format_lr(high))}</td>')


class ScanReport:
    """A batch report written as the scan goes: each video's page when it finishes (so memory stays flat
    over thousands of videos), and index.html, sorted by score, rewritten after each video.

    The index rows are also kept in index.jsonl, so a resumed scan (`resume=True`) lists the videos of
    every earlier run too; a video scanned again replaces its earlier row."""

    def __init__(self, out_dir: str | Path, resume: bool = False):
        self.out_dir = Path(out_dir)
        if not resume and self.out_dir.is_symlink():  # a new report replaces the link, never the folder it names
            self.out_dir.unlink()
        (self.out_dir / "videos").mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, IndexRow] = {}
        self._pages = 0
        rows_file = self.out_dir / REPORT_ROWS
        if resume and rows_file.is_file():
            self._load(rows_file)
        else:  # a new report (the output check let an earlier one be replaced only with --overwrite)
            for earlier in [rows_file, *(self.out_dir / "videos").glob("*.html")]:
                if earlier.exists() or earlier.is_symlink():
                    earlier.unlink()
        self._rows_fh = open(rows_file, "a", encoding="utf-8")

    def _load(self, rows_file: Path) -> None:
        for line in rows_file.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                path = unescape_text(row["path"])
                self._rows[path_key(path)] = IndexRow(row["label"], row["score"], path, unescape_text(row["reason"]),
                                                      row["page"], row.get("likelihood_ratio"))
            except (ValueError, KeyError, TypeError):
                continue  # a half-written last line from a kill
        self._pages = len(list((self.out_dir / "videos").glob("*.html")))

    def add(self, result: VideoResult) -> None:
        page = f"videos/{_page_name(self._pages, result)}"
        self._pages += 1
        write_video_report(result, self.out_dir / page)
        row = IndexRow(result.label, result.score, result.path, result.reason or "", page,
                       _index_lr(result.likelihood_ratio))
        self._rows[path_key(result.path)] = row
        self._rows_fh.write(json.dumps({"label": row.label, "score": row.score, "path": escape_text(row.path),
                                        "reason": escape_text(row.reason), "page": page,
                                        "likelihood_ratio": row.likelihood_ratio}) + "\n")
        self._rows_fh.flush()
        self.write_index()

    def write_index(self) -> Path:
        ordered = sorted(self._rows.values(), key=lambda r: (r.score is None, -(r.score or 0.0), r.path))
        rows = "".join(
            f'<tr><td style="color:{LABEL_COLOUR.get(row.label, "#555")};font-weight:700">{_esc(row.label)}</td>'
            f'<td>{_score(row.score)}</td>{_index_lr_cells(row.likelihood_ratio)}'
            f'<td><a href="{_esc(row.page)}">{_esc(row.path)}</a></td><td>{_esc(row.reason)}</td></tr>'
            for row in ordered)
        index = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR}<title>dfscan scan report</title>
<style>{CSS}</style></head><body><h1>dfscan scan report: {len(ordered)} videos</h1>
<p class="muted">{_esc(INDEX_LR_NOTE)}</p>
<table><tr><th>verdict</th><th>score</th><th>LR</th><th>log10 LR</th><th>strength of evidence</th>
<th>LR bounds (ELUB)</th><th>video</th><th>note</th></tr>{rows}</table></body></html>"""
        return atomic_write_text(self.out_dir / REPORT_INDEX, index)

    def close(self) -> None:
        self._rows_fh.close()


def write_scan_report(results: Iterable[VideoResult], out_dir: str | Path) -> Path:
    report = ScanReport(out_dir)
    try:
        for result in results:
            report.add(result)
        return report.write_index()
    finally:
        report.close()

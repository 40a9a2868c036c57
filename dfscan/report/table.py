"""Rich renderings of scan results for people at a terminal."""
from __future__ import annotations

from collections import Counter

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dfscan.likelihood import format_lr, summary_line
from dfscan.results import VideoResult, shown

LABEL_STYLE = {"FAKE": "bold red", "REAL": "bold green", "NO_FACE": "bold yellow", "ERROR": "bold magenta"}


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def video_panel(result: VideoResult) -> Panel:
    label = Text(result.label, style=LABEL_STYLE.get(result.label, "bold"))
    head = Text.assemble(label, "  score ", _score(result.score),
                         f"  threshold {_score(result.threshold)} ({result.threshold_name})"
                         if result.threshold is not None else "")
    parts: list = [head]
    if result.reason:
        parts.append(Text(shown(result.reason), style="dim"))
    parts.append(Text(summary_line(result.likelihood_ratio), style="bold" if result.score is not None else "dim"))
    if (result.likelihood_ratio or {}).get("calibration_set"):
        parts.append(Text(f"LR calibrated on: {result.likelihood_ratio['calibration_set']}", style="dim"))
    if result.tracks:
        table = Table(box=None, pad_edge=False)
        for col in ("track", "faces", "from s", "to s", "score", "LR", "label"):
            table.add_column(col, justify="right" if col not in ("label",) else "left")
        for track in sorted(result.tracks, key=lambda t: -(t.score or -1)):
            obs = track.observations
            table.add_row(str(track.track_id), str(track.n_faces), f"{obs[0].timestamp:.2f}",
                          f"{obs[-1].timestamp:.2f}", _score(track.score),
                          format_lr((track.likelihood_ratio or {}).get("lr")),
                          Text(track.label, style=LABEL_STYLE.get(track.label, "dim")))
        parts.append(table)
    if result.segments:
        spans = ", ".join(f"{s['start_s']:.2f}-{s['end_s']:.2f}s ({s['mean_score']:.2f})" for s in result.segments)
        parts.append(Text(f"suspicious: {spans}", style="red"))
    video = result.video or {}
    facts = [f"{video.get('width')}x{video.get('height')}" if video.get("width") else "",
             f"{video['duration_s']:.1f}s" if video.get("duration_s") else "",
             video.get("codec", ""), f"{len(result.frames)} frames sampled" if result.frames else "",
             f"model {result.model['name']}@{result.model['version']}" if result.model else "",
             result.provider or "", f"{result.timings.get('total_s', 0):.2f}s"]
    parts.append(Text(" · ".join(f for f in facts if f), style="dim"))
    return Panel(Group(*parts), title=Text(shown(result.path)), title_align="left")


def summary_table(counts: Counter[str]) -> Table:
    """Videos per label."""
    table = Table(title="scan summary")
    for label in ("FAKE", "REAL", "NO_FACE", "ERROR"):
        table.add_column(label, justify="right", style=LABEL_STYLE[label])
    table.add_row(*(str(counts.get(label, 0)) for label in ("FAKE", "REAL", "NO_FACE", "ERROR")))
    return table


def result_line(result: VideoResult) -> Text:
    style = LABEL_STYLE.get(result.label, "")
    tail = f"  {shown(result.reason)}" if result.reason else ""
    return Text.assemble((f"{result.label:<8}", style), f" {_score(result.score):>6}  {shown(result.path)}",
                         (tail, "dim"))


def print_video(result: VideoResult, console: Console) -> None:
    console.print(video_panel(result))

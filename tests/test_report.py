"""HTML reports: self-contained (no external URL), and they render in a real browser."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import dfscan
from dfscan.cli import app
from dfscan.likelihood import format_lr
from dfscan.model.scorer import default_bundle_path
from dfscan.report.html import ScanReport, render_video_report, write_video_report
from videos import write_damaged, write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
runner = CliRunner()
FAKE_RED = (0xC0, 0x39, 0x2B)  # LABEL_COLOUR["FAKE"], RGB


@pytest.fixture(scope="module")
def fake_result(face_video, bundles):
    return dfscan.scan_video(face_video, model=bundles["all_fake"], keep_thumbnails=True)


def test_report_is_self_contained(fake_result, tmp_path):
    page = write_video_report(fake_result, tmp_path / "r.html").read_text()
    text = re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"(https?|ftp|wss?):|//[a-z0-9]|url\(|@import", text, re.I), "no external URL of any kind"
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"<(script|link|iframe)", page, re.I)
    assert page.count("data:image/jpeg;base64,") == sum(t.n_faces for t in fake_result.tracks)
    assert "FAKE" in page and fake_result.video["sha256"] in page
    assert 'class="threshold"' in page and 'class="segment"' in page
    runtime = fake_result.settings["detector"]["runtime"]  # what ran the face detector, with its version
    assert runtime.split()[0] in ("onnxruntime", "openvino")
    assert f"<th>face detector runtime</th><td>{runtime}</td>" in page


def test_scan_index_sorted_by_score(fake_result, blank_video, bundles, tmp_path):
    no_face = dfscan.scan_video(blank_video, model=bundles["all_fake"], keep_thumbnails=True)
    report = ScanReport(tmp_path / "rep")
    report.add(no_face)
    report.add(fake_result)
    index = (tmp_path / "rep" / "index.html").read_text()
    assert index.index(fake_result.path) < index.index(no_face.path)
    pages = re.findall(r'href="(videos/[^"]+)"', index)
    assert len(pages) == 2 and all((tmp_path / "rep" / p).is_file() for p in pages)


def _screenshot(html_path, png_path) -> np.ndarray:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={png_path.parent / 'chrome-profile'}", "--hide-scrollbars",
           "--window-size=1000,1300", f"--screenshot={png_path}", html_path.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    image = cv2.imread(str(png_path))
    assert image is not None, "chromium wrote no screenshot"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_chromium(fake_result, tmp_path):
    html_path = write_video_report(fake_result, tmp_path / "report.html")
    shot = _screenshot(html_path, tmp_path / "shot.png")
    red = np.all(np.abs(shot.astype(int) - FAKE_RED) <= 6, axis=2)
    ys, xs = np.nonzero(red)
    assert red.sum() > 800, "the red FAKE verdict badge should be drawn"
    assert ys.min() < 200, "the verdict is up front, at the top of the page"
    # the face thumbnails: photographic, so many distinct colours in the region below the timeline
    lower = shot[500:1300]
    colours = len(np.unique(lower.reshape(-1, 3) // 8, axis=0))
    assert colours > 200, "face thumbnails should be rendered as images"


class _IndexRows(HTMLParser):
    """The rows of a scan index: each cell's text and attributes, keyed by the video link's text."""

    def __init__(self):
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[tuple[str, dict]]] = []
        self._cell: tuple[list[str], dict] | None = None
        self._in_header = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._in_header = tag == "th"
            self._cell = ([], dict(attrs))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0].append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell[0]).strip()
            if self._in_header:
                self.header.append(text)
            else:
                self.rows[-1].append((text, self._cell[1]))
            self._cell = None


def _index_table(index_html: str) -> tuple[list[str], dict[str, dict[str, tuple[str, dict]]]]:
    parser = _IndexRows()
    parser.feed(index_html)
    rows = [dict(zip(parser.header, cells)) for cells in parser.rows if cells]
    return parser.header, {row["video"][0]: row for row in rows}


@pytest.mark.skipif(not (default_bundle_path() / "manifest.json").is_file(), reason="no shipped model in weights/default")
def test_scan_index_lr_column_agrees_with_csv_and_jsonl(real_clips, blank_video, tmp_path):
    """The shipped (LR-calibrated) bundle over the shared real clips, a blank video and a broken file:
    the index has the LR columns, with the CSV's values; NO_FACE and ERROR rows have empty LR cells."""
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    videos = [*sorted(str(p) for p in real_clips.glob("*.mp4")), str(blank_video), str(bad)]
    (tmp_path / "videos.txt").write_text("\n".join(videos) + "\n")
    out = tmp_path / "report"
    result = runner.invoke(app, ["scan", str(tmp_path / "videos.txt"), "--frames", "6", "--device", "cpu",
                                 "--csv", str(tmp_path / "r.csv"), "--jsonl", str(tmp_path / "r.jsonl"),
                                 "--report", str(out)])
    assert result.exit_code in (0, 1, 3), result.output  # 3: the batch has an ERROR row
    csv_rows = {row["path"]: row for row in csv.DictReader(open(tmp_path / "r.csv", newline=""))}
    json_rows = {row["path"]: row for row in map(json.loads, open(tmp_path / "r.jsonl"))}
    index_html = (out / "index.html").read_text()
    header, index_rows = _index_table(index_html)
    assert header[:6] == ["verdict", "score", "LR", "log10 LR", "strength of evidence", "LR bounds (ELUB)"]
    assert set(index_rows) == set(csv_rows) == set(videos)
    scored = 0
    for path, row in index_rows.items():
        record = json_rows[path]["likelihood_ratio"]
        lr_text, lr_attrs = row["LR"]
        assert row["verdict"][0] == csv_rows[path]["label"]
        if record["lr"] is None:
            assert csv_rows[path]["lr"] == "" and lr_text == "" and row["log10 LR"][0] == ""
            assert lr_attrs["title"] == record["reason"]
            continue
        scored += 1
        assert lr_attrs["data-lr"] == csv_rows[path]["lr"] and lr_attrs["data-log10-lr"] == csv_rows[path]["log10_lr"]
        assert lr_text == format_lr(record["lr"]) and float(row["log10 LR"][0]) == pytest.approx(record["log10"], abs=0.005)
        assert row["strength of evidence"][0].startswith(record["verbal"])
        low, high = record["bounds"]
        assert row["LR bounds (ELUB)"][0] == f"{format_lr(low)} to {format_lr(high)}"
        assert low <= float(csv_rows[path]["lr"]) <= high
        assert float(csv_rows[path]["log10_lr"]) == record["log10"], "a negative log10 LR is a number, not a guarded text"
    assert scored == 4, "every real clip has a face and so an LR"
    assert index_rows[str(blank_video)]["verdict"][0] == "NO_FACE" and index_rows[str(bad)]["verdict"][0] == "ERROR"
    # a resumed report rebuilds the same index from index.jsonl
    resumed = ScanReport(out, resume=True)
    try:
        assert resumed.write_index().read_text() == index_html
    finally:
        resumed.close()


def test_frames_concealed_by_the_decoder_are_named(tmp_path):
    """A damaged stream's frames are partly filled in by FFmpeg's error concealment: a sampled frame that was
    is marked in the JSON and named in the report's provenance; a clean file's frames are not."""
    clean = write_video(tmp_path / "clean.mp4", n_frames=1500, size=(160, 96), fps=25, gop=25)
    damaged = write_damaged(tmp_path / "damaged.mp4", clean)
    for path, expected in ((clean, False), (damaged, True)):
        result = dfscan.scan_video(path, frames=32)
        concealed = [f for f in result.frames if f["concealed"]]
        assert bool(concealed) == expected and len(result.frames) == 32
        row = re.search(r"<th>frames concealed by the decoder</th><td>([^<]*)</td>", render_video_report(result))
        assert row is not None
        if expected:
            assert row.group(1).startswith(f"{len(concealed)} of 32 sampled ({concealed[0]['index']}@")
        else:
            assert row.group(1) == "none"
        # no face in these frames: a NO_FACE verdict says the file is damaged (found by a probe: only the JSON did)
        assert result.label == "NO_FACE" and result.reason.startswith("no face found in 32 sampled frames")
        assert (f"({len(concealed)} of them partly filled in by the decoder" in result.reason) == expected

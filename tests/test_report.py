"""HTML reports: self-contained (no external URL), and they render in a real browser."""
from __future__ import annotations

import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

import dfscan
from dfscan.report.html import ScanReport, write_video_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
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

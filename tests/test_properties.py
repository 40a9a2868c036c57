"""Property-based tests (hypothesis) over options, manifest values and the lossless text escape: every
value is either accepted and in range, or refused with one line; the escape reverses for any bytes."""
from __future__ import annotations

import os

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the [test] extra")
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

from dfscan.errors import ModelError, UsageError  # noqa: E402
from dfscan.model.manifest import Manifest, load_manifest  # noqa: E402
from dfscan.results import csv_cell, csv_uncell, escape_text, unescape_text  # noqa: E402
from dfscan.settings import AGGREGATIONS, ScanSettings, resolve_scan_settings, settings_from_options  # noqa: E402


@given(st.binary(min_size=1, max_size=40))
def test_escape_is_reversible_for_any_bytes(raw):
    text = os.fsdecode(raw)
    escaped = escape_text(text)
    escaped.encode("utf-8")  # always writable as UTF-8
    assert unescape_text(escaped) == text
    assert csv_uncell(csv_cell(text)) == text


option_text = st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["all", "0", "1", "32", "-3", "nan", "inf"]))
numbers = st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True))


@given(frames=option_text, fps=st.one_of(st.none(), st.floats()), threshold=option_text,
       aggregation=st.one_of(st.none(), st.sampled_from([*AGGREGATIONS, "bogus", ""])),
       min_track=st.integers(-2, 5), side=st.integers(-10, 4000), min_face=st.integers(-2, 100))
def test_options_are_accepted_only_in_range(frames, fps, threshold, aggregation, min_track, side, min_face):
    try:
        settings = settings_from_options(frames, fps, threshold, aggregation, min_track, side, min_face)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert settings.all_frames or settings.frames is None or settings.frames >= 1
    assert settings.fps is None or 0 < settings.fps < float("inf")
    assert not isinstance(settings.threshold, float) or 0 <= settings.threshold <= 1
    assert settings.min_track_faces >= 1 and settings.detector.min_face_size >= 1


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=60)
@given(temperature=numbers, point=numbers, top_k=numbers, threshold=st.one_of(numbers, st.text(max_size=3)),
       frames=numbers)
def test_manifest_values_are_accepted_only_in_range(bundles, temperature, point, top_k, threshold, frames):
    data = load_manifest(bundles["neutral"]).to_dict()
    data["calibration"] = {"method": "temperature", "temperature": temperature}
    data["operating_points"]["balanced"] = point
    data["scan"].update(top_k=top_k, threshold=threshold, frames=frames)
    try:
        manifest = Manifest.from_dict(data)
    except ModelError as exc:
        assert "\n" not in str(exc)
        return
    assert 0 < manifest.calibration["temperature"] < float("inf")
    assert 0 <= manifest.operating_points["balanced"] <= 1 and 0 <= manifest.scan.threshold <= 1
    assert manifest.scan.top_k >= 1 and manifest.scan.frames >= 1
    resolved = resolve_scan_settings(ScanSettings(threshold="balanced"), manifest)
    assert resolved.threshold == manifest.operating_points["balanced"] and resolved.top_k >= 1

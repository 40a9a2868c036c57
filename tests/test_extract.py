import csv
import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dfscan.faceset import FaceRecord, FaceSet, FaceSetWriter
from dfscan.datasets import (
    VideoItem,
    assign_splits,
    celebdf_source,
    check_grouping,
    read_csv,
    read_dataset,
    read_dfdc,
    read_ffpp,
    read_folder,
    split_for,
)
from dfscan.train.extract import FaceExtractor, extract_faces

HAVE_PIPELINE = all(importlib.util.find_spec(m) is not None for m in ("dfscan.video", "dfscan.faces.mtcnn"))


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def by_video(items: list[VideoItem]) -> dict[str, VideoItem]:
    return {Path(i.video).name: i for i in items}


# --- FaceForensics++ ---------------------------------------------------------------------------------

@pytest.fixture
def ffpp(tmp_path):
    for vid in ("000", "001", "002", "003", "004"):
        touch(tmp_path / f"original_sequences/youtube/c23/videos/{vid}.mp4")
    for method in ("Deepfakes", "Face2Face"):
        for name in ("000_001", "001_000", "002_003", "003_002"):
            touch(tmp_path / f"manipulated_sequences/{method}/c23/videos/{name}.mp4")
    touch(tmp_path / "manipulated_sequences/Deepfakes/c40/videos/000_001.mp4")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.json").write_text(json.dumps([["000", "001"]]))
    (splits / "val.json").write_text(json.dumps([["003", "002"]]))
    (splits / "test.json").write_text(json.dumps([]))
    return tmp_path


def test_ffpp_official_splits(ffpp):
    items = read_ffpp(ffpp, "c23")
    assert len(items) == 5 + 8
    videos = {i.video: i for i in items}
    real = videos["original_sequences/youtube/c23/videos/001.mp4"]
    assert (real.label, real.split, real.source) == ("real", "train", "001")
    fake = videos["manipulated_sequences/Face2Face/c23/videos/002_003.mp4"]
    assert (fake.label, fake.split, fake.source) == ("fake", "val", "002")  # pair listed as [003, 002]
    assert videos["original_sequences/youtube/c23/videos/004.mp4"].split is None  # in no split file
    assert not check_grouping(assign_splits(items))


def test_ffpp_methods_and_compression(ffpp):
    items = read_ffpp(ffpp, "c23", methods=["Deepfakes"])
    assert {i.video.split("/")[1] for i in items if i.label == "fake"} == {"Deepfakes"}
    assert [i.video for i in read_ffpp(ffpp, "c40")] == ["manipulated_sequences/Deepfakes/c40/videos/000_001.mp4"]
    with pytest.raises(ValueError):
        read_ffpp(ffpp, "c23", methods=["DeepFaceLab"])
    with pytest.raises(ValueError):
        read_ffpp(ffpp, "c10")


def test_ffpp_deepfakedetection(tmp_path):
    touch(tmp_path / "original_sequences/actors/c23/videos/01__outside_talking.mp4")
    touch(tmp_path / "original_sequences/actors/c23/videos/02__kitchen.mp4")
    touch(tmp_path / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__outside_talking__ABCD1234.mp4")
    items = assign_splits(read_ffpp(tmp_path, "c23", methods=["DeepFakeDetection"]))
    fake = next(i for i in items if i.label == "fake")
    assert fake.source == "01__outside_talking"
    real = next(i for i in items if i.source == "01__outside_talking" and i.label == "real")
    assert real.split == fake.split  # grouped by the target actor


# --- Celeb-DF v2 -------------------------------------------------------------------------------------

def test_celebdf_naming():
    assert celebdf_source("id0_id16_0003") == ("id0_0003", "id0")  # target id0's video 0003, donor id16
    assert celebdf_source("id12_0001") == ("id12_0001", "id12")


def test_celebdf_reader(tmp_path):
    for name in ("id0_0000", "id0_0001", "id1_0000", "id2_0000"):
        touch(tmp_path / f"Celeb-real/{name}.mp4")
    for name in ("00000", "00001"):
        touch(tmp_path / f"YouTube-real/{name}.mp4")
    for name in ("id0_id1_0000", "id1_id0_0000", "id0_id2_0001", "id2_id1_0000"):
        touch(tmp_path / f"Celeb-synthesis/{name}.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00001.mp4\n1 Celeb-real/id2_0000.mp4\n0 Celeb-synthesis/id2_id1_0000.mp4\n")
    items = read_dataset("celebdf", tmp_path)
    videos = by_video(items)
    assert len(items) == 10
    assert videos["id0_id2_0001.mp4"].source == "id0_0001"
    assert videos["id0_id2_0001.mp4"].label == "fake"
    assert {v for v, i in videos.items() if i.split == "test"} == {"00001.mp4", "id2_0000.mp4", "id2_id1_0000.mp4"}
    rest = [i for i in items if i.split != "test"]
    assert {i.split for i in rest} <= {"train", "val"}
    # every video of one target identity (real or fake) shares a split
    split_of_group: dict[str, set[str]] = {}
    for item in rest:
        split_of_group.setdefault(item.group_key, set()).add(item.split)
    assert all(len(s) == 1 for s in split_of_group.values())
    assert videos["00000.mp4"].source == "YouTube-real/00000"


# --- DFDC --------------------------------------------------------------------------------------------

def test_dfdc_reader(tmp_path):
    parts = {
        "dfdc_train_part_0": {"aaa.mp4": {"label": "REAL", "original": None, "split": "train"},
                              "bbb.mp4": {"label": "FAKE", "original": "aaa.mp4", "split": "train"}},
        "dfdc_train_part_1": {"ccc.mp4": {"label": "FAKE", "original": "aaa.mp4", "split": "train"},
                              "ddd.mp4": {"label": "REAL", "original": None, "split": "train"},
                              "missing.mp4": {"label": "REAL", "original": None, "split": "train"}},
    }
    for part, meta in parts.items():
        (tmp_path / part).mkdir()
        (tmp_path / part / "metadata.json").write_text(json.dumps(meta))
        for name in meta:
            if name != "missing.mp4":
                touch(tmp_path / part / name)
    items = assign_splits(read_dfdc(tmp_path))
    videos = by_video(items)
    assert set(videos) == {"aaa.mp4", "bbb.mp4", "ccc.mp4", "ddd.mp4"}
    assert videos["ccc.mp4"].source == "aaa.mp4" and videos["ccc.mp4"].label == "fake"
    assert videos["ddd.mp4"].source == "ddd.mp4"
    assert videos["aaa.mp4"].split == videos["bbb.mp4"].split == videos["ccc.mp4"].split


def test_dfdc_folder_split_as_bondi(tmp_path):
    # With validation (35-39) and test (40-49) folders present, the split is Bondi et al.'s by folder;
    # a fake follows its original's folder.
    parts = {0: {"r0.mp4": {"label": "REAL"}, "f0.mp4": {"label": "FAKE", "original": "r0.mp4"}},
             36: {"r36.mp4": {"label": "REAL"}, "f36.mp4": {"label": "FAKE", "original": "r36.mp4"}},
             41: {"r41.mp4": {"label": "REAL"}, "f41.mp4": {"label": "FAKE", "original": "r0.mp4"}}}
    for n, meta in parts.items():
        folder = tmp_path / f"dfdc_train_part_{n}"
        folder.mkdir()
        (folder / "metadata.json").write_text(json.dumps(meta))
        for name in meta:
            touch(folder / name)
    videos = by_video(read_dataset("dfdc", tmp_path))
    assert {v: i.split for v, i in videos.items()} == {"r0.mp4": "train", "f0.mp4": "train", "r36.mp4": "val",
                                                       "f36.mp4": "val", "r41.mp4": "test", "f41.mp4": "train"}


# --- generic -----------------------------------------------------------------------------------------

def test_folder_and_csv(tmp_path):
    touch(tmp_path / "set/real/a.mp4")
    touch(tmp_path / "set/real/sub/b.mov")
    touch(tmp_path / "set/fake/c.mp4")
    touch(tmp_path / "set/fake/notes.txt")
    items = read_folder(tmp_path / "set")
    assert sorted((i.video, i.label) for i in items) == [("fake/c.mp4", "fake"), ("real/a.mp4", "real"),
                                                        ("real/sub/b.mov", "real")]
    with pytest.raises(ValueError):
        read_folder(tmp_path)

    csv_path = tmp_path / "list.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split", "source"])
        writer.writerow(["set/real/a.mp4", "real", "", ""])
        writer.writerow(["set/fake/c.mp4", "1", "test", "set/real/a.mp4"])
        writer.writerow([str(tmp_path / "set/real/sub/b.mov"), "REAL", "val", "b"])
    items = read_csv(csv_path)
    assert [i.label for i in items] == ["real", "fake", "real"]
    assert items[0].path == tmp_path / "set/real/a.mp4" and items[0].source == "set/real/a.mp4"
    assert items[1].split == "test" and items[1].source == "set/real/a.mp4"
    assert items[0].split is None
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.mp4,maybe\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_csv(bad)
    # one video twice: one item; with two labels, an error naming both lines (it kept the first silently)
    twice = tmp_path / "twice.csv"
    twice.write_text("path,label\nset/real/a.mp4,real\nset/real/./a.mp4,real\n")
    assert len(read_csv(twice)) == 1
    twice.write_text("path,label\nset/real/a.mp4,real\nset/fake/c.mp4,fake\nset/real/a.mp4,fake\n")
    with pytest.raises(ValueError, match="twice.csv:4: set/real/a.mp4 is labelled fake here and real on line 2"):
        read_csv(twice)


# --- grouped splits ----------------------------------------------------------------------------------

def test_grouped_splits_are_stable_and_clean():
    items = [VideoItem(Path(f"{s}_{k}.mp4"), "fake" if k else "real", None, f"src{s}") for s in range(300) for k in range(4)]
    assign_splits(items, (0.7, 0.2, 0.1))
    assert not check_grouping(items)
    counts = {name: sum(i.split == name for i in items if i.label == "real") for name in ("train", "val", "test")}
    assert 170 < counts["train"] < 250 and 30 < counts["val"] < 90 and 10 < counts["test"] < 55
    assert all(split_for(f"src{s}", (0.7, 0.2, 0.1)) == items[4 * s].split for s in range(300))
    assert {split_for(f"k{i}", (1, 0, 0)) for i in range(50)} == {"train"}
    assert {split_for(f"k{i}", (1, 1, 0)) for i in range(200)} == {"train", "val"}
    with pytest.raises(ValueError):
        split_for("x", (0.5, 0.5))
    # a split the dataset gave is kept
    given = VideoItem(Path("x.mp4"), "real", "test", "x")
    assert assign_splits([given], (1, 0, 0))[0].split == "test"


# --- extraction with a stub detector -----------------------------------------------------------------

class StubExtractor(FaceExtractor):
    """Two faces per video from `crops`; videos named `broken*` raise like an undecodable file."""

    def __init__(self):
        super().__init__(size=32, detector=object())
        self.calls: list[str] = []

    def crops(self, path):
        from dfscan.errors import DecodeError

        self.calls.append(path.name)
        if path.name.startswith("broken"):
            raise DecodeError("moov atom not found")
        if path.name.startswith("empty"):
            return []
        crop = np.full((32, 32, 3), 128, np.uint8)
        return [(crop, 0, None, np.array([10, 10, 60, 70.0])), (crop, 5, None, np.array([12, 10, 62, 70.0]))]


def test_extract_faces_resumes_and_skips_failures(tmp_path):
    items = [VideoItem(tmp_path / n, "real" if i % 2 else "fake", "train", n, n)
             for i, n in enumerate(["a.mp4", "broken.mp4", "empty.mp4", "d.mp4"])]
    seen = []
    stats = extract_faces(items, tmp_path / "faces", extractor=StubExtractor(), progress=lambda i, s: seen.append(s))
    assert seen == ["done", "failed", "no_face", "done"]
    assert (stats.videos, stats.failed, stats.no_face, stats.faces) == (3, 1, 1, 4)
    assert len(stats.failures) == 1 and stats.failures[0].startswith(f"{tmp_path / 'broken.mp4'}: ")
    faces = FaceSet.load(tmp_path / "faces")
    assert len(faces) == 4
    rec = faces.records[0]
    assert (rec.file, rec.video, rec.frame, rec.width, rec.height) == ("a/f000000.jpg", "a.mp4", 0, 50, 60)
    assert faces.read_image(rec).shape == (32, 32, 3)

    again = StubExtractor()
    stats = extract_faces(items, tmp_path / "faces", extractor=again, progress=False)
    assert stats.skipped_done == 2 and again.calls == ["broken.mp4", "empty.mp4"]
    assert len(FaceSet.load(tmp_path / "faces")) == 4

    # found by a fourth probe: a list that relabels a done video had it skipped as done, keeping the old label
    from dfscan.errors import UsageError

    before = (tmp_path / "faces" / "labels.csv").read_bytes()
    relabelled = [replace(items[0], label="real"), VideoItem(tmp_path / "e.mp4", "real", "train", "e.mp4", "e.mp4")]
    with pytest.raises(UsageError, match="already holds a.mp4 as fake, and this list says real"):
        extract_faces(relabelled, tmp_path / "faces", extractor=StubExtractor(), progress=False)
    assert (tmp_path / "faces" / "labels.csv").read_bytes() == before


def test_extract_never_adds_to_a_face_set_it_did_not_write(tmp_path):
    """A folder whose labels.csv dfscan did not write (no faceset.json: its crops' geometry is unknown) is not
    extracted into, nor is a face set cut with other crop settings: refused (a usage error) before anything
    is written."""
    from dfscan.errors import UsageError

    items = [VideoItem(tmp_path / "a.mp4", "real", "train", "a.mp4", "a.mp4")]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "labels.csv").write_text("file,label,split\nx.jpg,real,val\n")
    with pytest.raises(UsageError, match="did not write"):
        extract_faces(items, foreign, extractor=StubExtractor(), progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["labels.csv"]
    assert (foreign / "labels.csv").read_text() == "file,label,split\nx.jpg,real,val\n"
    extract_faces(items, tmp_path / "faces", extractor=StubExtractor(), progress=False)
    other = StubExtractor()
    other.size = 64
    with pytest.raises(UsageError, match="made with other settings \\(crop "):
        extract_faces(items, tmp_path / "faces", extractor=other, progress=False)


class _Frame:
    def __init__(self, index: int, image: np.ndarray, scale: float):
        self.index, self.timestamp, self.image, self.scale = index, index / 10, image, scale


class _Found:
    def __init__(self, boxes, scores):
        self.boxes, self.scores, self.landmarks = np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores), None


class _StubDetector:
    """Two faces per frame in detection coordinates: a big one (40 px) and a small one (20 px)."""

    def detect_batch(self, images):
        return [_Found([[5, 5, 25, 25], [50, 10, 90, 50], [0, 0, 4, 4]], [0.99, 0.98, 0.99]) for _ in images]

    def detect_video(self, images, full_every=1, before=None):
        return self.detect_batch(images)


def test_face_extractor_boxes_scale_and_tracks(tmp_path, monkeypatch):
    import sys
    import types

    # frames decoded at half resolution: detection coords * 2 = original coords
    frames = [_Frame(i * 3, np.full((60, 100, 3), 50 * i, np.uint8), 2.0) for i in range(4)]
    video_stub = types.ModuleType("dfscan.video")
    video_stub.sample_frames = lambda path, n=32, fps=None, max_side=1920: (None, frames[:n])
    monkeypatch.setitem(sys.modules, "dfscan.video", video_stub)

    largest = FaceExtractor(size=16, frames=4, detector=_StubDetector())
    out = largest.crops(tmp_path / "x.mp4")
    assert [(f, t) for _, f, t, _ in out] == [(0, None), (3, None), (6, None), (9, None)]
    assert np.allclose(out[0][3], [100, 20, 180, 100])  # the 40 px face, in original pixels
    assert out[1][0].shape == (16, 16, 3) and int(out[1][0][8, 8, 0]) == 50

    every = FaceExtractor(size=16, frames=4, max_faces_per_frame=4, detector=_StubDetector())
    out = every.crops(tmp_path / "x.mp4")
    assert len(out) == 8  # the 4 px box is below min_face_size (32 px in original pixels)
    assert sorted({t for _, _, t, _ in out}) == [0, 1]
    item = VideoItem(tmp_path / "x.mp4", "fake", "val", "src.mp4", "dir/x.mp4")
    with FaceSetWriter(tmp_path / "faces") as writer:
        assert every.extract(item, writer) == 8
    records = FaceSet.load(tmp_path / "faces").records
    assert records[0].file == "dir__x/f000000_t0.jpg" and records[0].track == 0
    assert {(r.width, r.height) for r in records} == {(80, 80), (40, 40)}


# --- extraction end to end (needs dfscan.video and dfscan.faces.mtcnn) -------------------------------

def _astronaut_face() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test face")
    return skimage_data.astronaut()[20:220, 110:290]  # RGB, public domain (NASA); the face and some margin


def write_face_video(path: Path, n_frames: int = 12, size: tuple[int, int] = (320, 240), face: bool = True) -> Path:
    """An H.264 clip of the astronaut's face drifting right over a grey background (or the background only)."""
    from videos import write_video

    patch = _astronaut_face() if face else None
    w, h = size

    def draw(i: int) -> np.ndarray:
        frame = np.full((h, w, 3), 90, np.uint8)
        if patch is not None:
            x = 40 + 4 * i
            frame[20:20 + patch.shape[0], x:x + patch.shape[1]] = patch
        return frame

    return write_video(path, n_frames=n_frames, size=size, fps=10, frame_fn=draw)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PIPELINE, reason="dfscan.video / dfscan.faces.mtcnn not in this checkout yet")
def test_extract_faces_real_video(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    write_face_video(tmp_path / "real" / "face.mp4")
    (tmp_path / "fake" / "broken.mp4").write_bytes(b"not a video at all")
    items = read_dataset("folder", tmp_path)
    stats = extract_faces(items, tmp_path / "faces", frames=6, size=64, margin=0.2, device="cpu", progress=False)
    assert stats.failed == 1 and stats.videos == 1
    faces = FaceSet.load(tmp_path / "faces")
    assert 4 <= len(faces) <= 6  # the face is found in (nearly) every sampled frame
    assert {r.video for r in faces.records} == {"real/face.mp4"}
    assert all(r.label == "real" and 40 < r.width < 200 for r in faces.records)
    crop = faces.read_image(faces.records[0])
    assert crop.shape == (64, 64, 3) and crop.std() > 20  # a face, not the flat background


# --- command -----------------------------------------------------------------------------------------

def test_extract_command_dry_run(ffpp):
    import typer
    from typer.testing import CliRunner

    from dfscan.commands.data import default_out_dir, extract_command

    app = typer.Typer()
    app.command()(extract_command)
    result = CliRunner().invoke(app, ["ff++", str(ffpp), "--methods", "Deepfakes,Face2Face", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "13 videos" in result.output
    assert default_out_dir("ff++", ffpp, "c40") == ffpp / "dfscan_faces" / "ff++_c40"
    assert default_out_dir("csv", ffpp / "splits" / "train.json", "c23") == ffpp / "splits" / "dfscan_faces" / "csv"
    bad = CliRunner().invoke(app, ["nope", str(ffpp)])
    assert bad.exit_code == 2
    for dataset in ("ff++", "folder"):  # a quality no dataset has is refused, not ignored where it does not apply
        typo = CliRunner().invoke(app, [dataset, str(ffpp), "--compression", "c32", "--dry-run"])
        assert typo.exit_code == 2 and "--compression must be one of raw, c23, c40" in typo.output, typo.output


def test_command_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, dfscan.commands.data; "
            "heavy = [m for m in ('torch', 'sklearn', 'onnxruntime', 'cv2') if m in sys.modules]; "
            "print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_face_set_is_appended_to_as_its_own_file_never_through_a_link(tmp_path):
    """Found by a fourth probe: a face set whose labels.csv was a link (or a hard link) to another CSV had its new
    rows appended to that file. The link is replaced by a file of its own holding the same rows."""
    record = FaceRecord("x/f0.jpg", "real", "train", "x.mp4", "x.mp4", 16, 16)
    for link in (os.symlink, os.link):
        faces, other = tmp_path / f"faces_{link.__name__}", tmp_path / f"other_{link.__name__}.csv"
        with FaceSetWriter(faces) as writer:
            writer.add(np.zeros((16, 16, 3), np.uint8), record)
        (faces / "labels.csv").rename(other)
        link(other, faces / "labels.csv")
        before = other.read_bytes()
        with FaceSetWriter(faces) as writer:
            writer.add(np.zeros((16, 16, 3), np.uint8), replace(record, file="y/f0.jpg", video="y.mp4"))
        assert other.read_bytes() == before and not (faces / "labels.csv").is_symlink()
        assert [r.file for r in FaceSet.load(faces).records] == ["x/f0.jpg", "y/f0.jpg"]

"""Dataset readers and face extraction: a downloaded dataset tree -> `VideoItem`s -> a face set.

Readers only list videos with their label, split and `source` (the real video the faces come from, the
group key that keeps a source and every fake made from it in one split). `extract_faces` decodes each
video, detects faces, cuts them with the one crop function and writes them with `FaceSetWriter`.

Naming conventions the readers rely on:
- FaceForensics++: fakes are `<target>_<donor>.mp4`; the frames are the target's video, so `source` is
  `<target>`. DeepFakeDetection fakes are `<target>_<donor>__<scene>__<code>.mp4`, made from the actors'
  real video `<target>__<scene>.mp4`.
- Celeb-DF v2: `Celeb-synthesis/idX_idY_NNNN.mp4` is the real video `Celeb-real/idX_NNNN.mp4` (target
  identity X, video NNNN) with the face of identity Y swapped in, so `source` is `idX_NNNN` (the
  authors' frame lists read `id0_id1_0000_00060.png` as frame 60 of `id0_0000.mp4`, face swapped to id1). Train/val
  are grouped by the target identity `idX`, so all videos of one person's footage share a split (the
  donor identity Y can still appear in another split: Celeb-DF's identities are too interlinked to avoid it).
- DFDC: `metadata.json` names each fake's `original`. Its `split` field is "train" for every training
  part. Where the parts found include validation and test folders, the split is Bondi et al.'s by folder
  (`dfdc_train_part_40`-`49` test, `35`-`39` val, the rest train; a fake goes with its original's folder);
  otherwise splits are assigned by source. DFDC's actors recur across folders: identities can straddle.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from dfscan.faceset import SPLITS, FaceRecord, FaceSetWriter
from dfscan.inputs import confined

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
FFPP_COMPRESSIONS = ("raw", "c23", "c40")
DATASETS = ("ff++", "celebdf", "dfdc", "folder", "csv")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test
# dfdc_faces (the shared training set) is cut tight around the face; extract the same way by default.
DEFAULT_SIZE = 224
DEFAULT_MARGIN = 0.0


@dataclass
class VideoItem:
    path: Path
    label: str                 # real | fake
    split: str | None          # train | val | test; None until assigned
    source: str                # the real video the faces come from (for a real video, itself)
    video: str = ""            # unique id of the video within the dataset (default: path relative to root)
    group: str = ""            # split group key when coarser than `source` (e.g. a Celeb-DF identity)

    @property
    def group_key(self) -> str:
        return self.group or self.source


# --- splits ------------------------------------------------------------------------------------------

def _unit_hash(key: str, salt: str = "") -> float:
    digest = hashlib.sha256(f"{salt}{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = "") -> str:
    """The split a group key falls in: stable across runs, machines and dataset subsets."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions}")
    total = float(sum(fractions))
    u = _unit_hash(key, salt)
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction / total
        if u < edge:
            return name
    return SPLITS[-1] if fractions[2] > 0 else ("val" if fractions[1] > 0 else "train")


def assign_splits(items: Iterable[VideoItem], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  salt: str = "") -> list[VideoItem]:
    """Give every item without a split one by the hash of its group key, so no source straddles splits."""
    items = list(items)
    for item in items:
        if item.split is None:
            item.split = split_for(item.group_key, fractions, salt)
    return items


def check_grouping(items: Iterable[VideoItem]) -> dict[str, set[str]]:
    """Sources found in more than one split (empty when the split is clean)."""
    seen: dict[str, set[str]] = {}
    for item in items:
        seen.setdefault(item.source, set()).add(str(item.split))
    return {s: splits for s, splits in seen.items() if len(splits) > 1}


# --- FaceForensics++ ---------------------------------------------------------------------------------

def _videos_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def read_ffpp_splits(root: Path) -> dict[str, str]:
    """Map 'a_b' (both orders) and each id to its official split, from splits/{train,val,test}.json."""
    split_of: dict[str, str] = {}
    for folder in (root / "splits", root / "dataset" / "splits", root):
        if not (folder / "train.json").is_file():
            continue
        for name in SPLITS:
            path = folder / f"{name}.json"
            if not path.is_file():
                continue
            for a, b in json.loads(path.read_text(encoding="utf-8")):
                for key in (f"{a}_{b}", f"{b}_{a}", str(a), str(b)):
                    split_of[key] = name
        break
    return split_of


def _ffpp_methods(root: Path, methods: Sequence[str] | None) -> list[str]:
    present = [m for m in FFPP_METHODS if (root / "manipulated_sequences" / m).is_dir()]
    if not methods:
        return present
    unknown = [m for m in methods if m not in FFPP_METHODS]
    if unknown:
        raise ValueError(f"unknown FaceForensics++ methods {unknown}; known: {', '.join(FFPP_METHODS)}")
    missing = [m for m in methods if m not in present]
    if missing:
        log.warning("FaceForensics++ methods not found under %s: %s", root, ", ".join(missing))
    return [m for m in methods if m in present]


def read_ffpp(root: str | Path, compression: str = "c23", methods: Sequence[str] | None = None) -> list[VideoItem]:
    """FaceForensics++ videos with the official splits (items the split files don't cover get split=None)."""
    root = Path(root)
    if compression not in FFPP_COMPRESSIONS:
        raise ValueError(f"compression must be one of {FFPP_COMPRESSIONS}, not {compression!r}")
    split_of = read_ffpp_splits(root)
    chosen = _ffpp_methods(root, methods)
    items: list[VideoItem] = []
    for path in _videos_in(root / "original_sequences" / "youtube" / compression / "videos"):
        items.append(VideoItem(path, "real", split_of.get(path.stem), path.stem, _rel(path, root)))
    for method in chosen:
        if method == "DeepFakeDetection":
            items.extend(_read_dfd(root, compression))
            continue
        for path in _videos_in(root / "manipulated_sequences" / method / compression / "videos"):
            target = path.stem.split("_")[0]
            items.append(VideoItem(path, "fake", split_of.get(path.stem), target, _rel(path, root)))
    return items


def _read_dfd(root: Path, compression: str) -> list[VideoItem]:
    """Google's DeepFakeDetection set inside FF++: no official split, so it is grouped by target actor."""
    items: list[VideoItem] = []
    for path in _videos_in(root / "original_sequences" / "actors" / compression / "videos"):
        actor = path.stem.split("__")[0]
        items.append(VideoItem(path, "real", None, path.stem, _rel(path, root), group=f"actor{actor}"))
    for path in _videos_in(root / "manipulated_sequences" / "DeepFakeDetection" / compression / "videos"):
        parts = path.stem.split("__")
        target = parts[0].split("_")[0]
        scene = parts[1] if len(parts) > 1 else ""
        items.append(VideoItem(path, "fake", None, f"{target}__{scene}", _rel(path, root), group=f"actor{target}"))
    return items


# --- Celeb-DF v2 -------------------------------------------------------------------------------------

CELEB_FAKE = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")
CELEB_REAL = re.compile(r"^(id\d+)_(\d+)$")


def celebdf_source(stem: str) -> tuple[str, str]:
    """(source video, group) for a Celeb-DF file stem; see the module docstring for the convention."""
    fake = CELEB_FAKE.match(stem)
    if fake:
        target, _donor, index = fake.groups()
        return f"{target}_{index}", target
    real = CELEB_REAL.match(stem)
    if real:
        return stem, real.group(1)
    return stem, stem  # YouTube-real: one video per person


def read_celebdf_test_list(root: Path) -> dict[str, str]:
    """Relative path -> label from List_of_testing_videos.txt (lines `label path`, label 1 = real)."""
    path = root / "List_of_testing_videos.txt"
    if not path.is_file():
        return {}
    listed: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].replace("\\", "/")] = "real" if parts[0] == "1" else "fake"
    return listed


def read_celebdf(root: str | Path) -> list[VideoItem]:
    """Celeb-DF v2: the official test list is the test split; the rest is left for train/val grouping."""
    root = Path(root)
    test_list = read_celebdf_test_list(root)
    items: list[VideoItem] = []
    for folder, label in (("Celeb-real", "real"), ("YouTube-real", "real"), ("Celeb-synthesis", "fake")):
        for path in _videos_in(root / folder):
            rel = _rel(path, root)
            source, group = celebdf_source(path.stem)
            if folder == "YouTube-real":
                source = group = f"YouTube-real/{path.stem}"  # YouTube-real stems (00000) are bare numbers
            listed = test_list.get(rel)
            if listed is not None and listed != label:
                log.warning("Celeb-DF test list labels %s %s, its folder says %s", rel, listed, label)
            items.append(VideoItem(path, label, "test" if listed else None, source, rel, group=group))
    return items


# --- DFDC --------------------------------------------------------------------------------------------

def read_dfdc(root: str | Path) -> list[VideoItem]:
    """DFDC training parts (`dfdc_train_part_*/metadata.json`); the root may also be a single part."""
    root = Path(root)
    metas = sorted(root.glob("dfdc_train_part_*/metadata.json")) or sorted(root.glob("*/metadata.json"))
    if (root / "metadata.json").is_file():
        metas.insert(0, root / "metadata.json")
    items: list[VideoItem] = []
    part_of: dict[str, int | None] = {}
    for meta_path in metas:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        part = _dfdc_part(meta_path.parent.name)
        for name, entry in sorted(meta.items()):
            path = meta_path.parent / name
            part_of.setdefault(name, part)
            if not path.is_file():
                log.warning("DFDC metadata names a missing file: %s", path)
                continue
            label = str(entry.get("label", "")).lower()
            if label not in ("real", "fake"):
                log.warning("DFDC %s: unknown label %r, skipped", path, entry.get("label"))
                continue
            source = entry.get("original") if label == "fake" and entry.get("original") else name
            items.append(VideoItem(path, label, None, source, name))
    parts = {p for p in part_of.values() if p is not None}
    if any(dfdc_folder_split(p) == "val" for p in parts) and any(dfdc_folder_split(p) == "test" for p in parts):
        for item in items:
            part = part_of.get(item.source, part_of.get(item.video))
            item.split = dfdc_folder_split(part) if part is not None else None
    return items


def _dfdc_part(folder: str) -> int | None:
    match = re.fullmatch(r"dfdc_train_part_(\d+)", folder)
    return int(match.group(1)) if match else None


def dfdc_folder_split(part: int) -> str:
    """Bondi et al.'s DFDC split: folders 40-49 test, 35-39 val, the other 40 train."""
    return "test" if 40 <= part <= 49 else "val" if 35 <= part <= 39 else "train"


# --- generic -----------------------------------------------------------------------------------------

def parse_label(value: str) -> str:
    """real/fake in any case, or 0/1 with 1 = fake (the usual detection convention)."""
    text = str(value).strip().lower()
    if text in ("real", "0", "original", "pristine"):
        return "real"
    if text in ("fake", "1", "manipulated", "deepfake"):
        return "fake"
    raise ValueError(f"label {value!r} is not real/fake/0/1")


def read_folder(root: str | Path) -> list[VideoItem]:
    """A folder with `real/` and `fake/` subfolders (searched recursively). Each video is its own source."""
    root = Path(root)
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise ValueError(f"{root} has neither a real/ nor a fake/ subfolder")
    items: list[VideoItem] = []
    for label in ("real", "fake"):
        folder = root / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
                rel = _rel(path, root)
                items.append(VideoItem(path, label, None, rel, rel))
    return items


def read_csv(csv_path: str | Path) -> list[VideoItem]:
    """A CSV `path,label[,split,source]` (`file` for `path` too, as in the shared wild_clips labels); paths
    are relative to the CSV's folder and must stay inside it. Rows that name no video file (images) are skipped."""
    csv_path = Path(csv_path)
    items: list[VideoItem] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        path_key = "path" if "path" in fields else "file"
        if path_key not in fields or "label" not in fields:
            raise ValueError(f"{csv_path} needs a header with at least `path,label`")
        for line, row in enumerate(reader, start=2):
            raw = row[path_key].strip()
            if Path(raw).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            try:
                path = confined(csv_path.parent, raw)
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            try:
                label = parse_label(row["label"])
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            split = (row.get("split") or "").strip().lower() or None
            if split is not None and split not in SPLITS:
                raise ValueError(f"{csv_path}:{line}: split {split!r} is not one of {SPLITS}")
            source = (row.get("source") or "").strip() or raw
            items.append(VideoItem(path, label, split, source, raw))
    return items


def read_labelled_videos(folder_or_csv: str | Path) -> list[VideoItem]:
    """The generic reader: a CSV file or a real/ + fake/ folder."""
    path = Path(folder_or_csv)
    return read_csv(path) if path.is_file() else read_folder(path)


def read_dataset(dataset: str, root: str | Path, compression: str = "c23", methods: Sequence[str] | None = None,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[VideoItem]:
    """Any supported dataset as VideoItems, every one with a split."""
    if dataset == "ff++":
        items = read_ffpp(root, compression, methods)
    elif dataset == "celebdf":
        items = read_celebdf(root)
        # the official test list is the test set; the rest goes to train/val only
        fractions = (fractions[0], fractions[1], 0.0)
    elif dataset == "dfdc":
        items = read_dfdc(root)
    elif dataset == "folder":
        items = read_folder(root)
    elif dataset == "csv":
        items = read_csv(root)
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, not {dataset!r}")
    return assign_splits(items, fractions)


# --- extraction --------------------------------------------------------------------------------------

@dataclass
class ExtractStats:
    videos: int = 0
    skipped_done: int = 0
    failed: int = 0
    no_face: int = 0
    faces: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _safe_name(video_id: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", video_id)
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", stem).strip("_") or "video"


class FaceExtractor:
    """The face pipeline plus crop settings; `extract(item, writer)` writes one video's faces.

    Faces are found, filtered, tracked and cut by `dfscan.faces.pipeline.FacePipeline`, the code the scanner
    uses, with the scanner's detector settings: a model trained on these crops sees the same crops when
    scanning (same size and margin given)."""

    def __init__(self, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN, frames: int = 32,
                 device: str = "auto", max_faces_per_frame: int = 1, all_tracks: bool = False,
                 detector=None):
        from dfscan.faces.pipeline import FacePipeline  # noqa: PLC0415
        from dfscan.settings import DetectorSettings  # noqa: PLC0415

        self.size, self.margin, self.frames = size, margin, frames
        self.max_faces_per_frame = max(1, max_faces_per_frame)
        self.all_tracks = all_tracks or self.max_faces_per_frame > 1
        self.settings = DetectorSettings(max_faces_per_frame=self.max_faces_per_frame)
        self.pipeline = FacePipeline(self.settings, size, margin, device, detector=detector)
        self.detector = self.pipeline.detector

    def crops(self, path: Path) -> list[tuple[np.ndarray, int, int | None, np.ndarray]]:
        """(crop, frame index, track id or None, box in original pixels) for each kept face."""
        from dfscan.video import sample_frames  # noqa: PLC0415

        _info, frames = sample_frames(path, n=self.frames)
        owned = [(face, track.track_id if self.all_tracks else None)
                 for track in self.pipeline.faces(frames) for face in track.faces]
        out = []
        for face, track in sorted(owned, key=lambda o: (o[0].detection.frame_pos, -1 if o[1] is None else o[1])):
            det = face.detection
            out.append((face.crop, int(frames[det.frame_pos].index), track, det.box))
        return out

    def extract(self, item: VideoItem, writer: FaceSetWriter) -> int:
        """Write one video's crops, then all its rows at once (a killed run never leaves half a video)."""
        video_id = item.video or item.path.name
        folder = _safe_name(video_id)
        records: list[FaceRecord] = []
        for crop, frame_index, track, box in self.crops(item.path):
            name = f"{folder}/f{frame_index:06d}" + ("" if track is None else f"_t{track}") + ".jpg"
            record = FaceRecord(file=name, label=item.label, split=str(item.split), source=item.source,
                                video=video_id, width=int(round(box[2] - box[0])),
                                height=int(round(box[3] - box[1])), frame=frame_index, track=track)
            writer.write_image(crop, record)
            records.append(record)
        writer.add_rows(records)
        return len(records)


ProgressHook = Callable[[VideoItem, str], None]


def extract_faces(items: Sequence[VideoItem], out_dir: str | Path, frames: int = 32, size: int = DEFAULT_SIZE,
                  margin: float = DEFAULT_MARGIN, device: str = "auto", max_faces_per_frame: int = 1,
                  all_tracks: bool = False, progress: bool | ProgressHook = True,
                  extractor: FaceExtractor | None = None) -> ExtractStats:
    """Extract faces from every video into the face set at `out_dir`, resuming where a previous run stopped.

    A video that fails to decode is logged and skipped. A video with no face is recorded nowhere, so a
    rerun tries it again (cheap next to the rest). `progress`: True for a rich bar, or a callback
    `(item, status)` with status in done|skipped|failed|no_face.
    """
    extractor = extractor or FaceExtractor(size, margin, frames, device, max_faces_per_frame, all_tracks)
    stats = ExtractStats()
    geometry = {"crop": {"size": extractor.size, "margin": extractor.margin}, "frames": frames,
                "detector": {"name": "mtcnn", **asdict(extractor.settings)}, "made_by": "dfscan extract"}
    with FaceSetWriter(out_dir, geometry=geometry) as writer, _Progress(progress, len(items)) as tick:
        for item in items:
            status = _extract_one(extractor, item, writer, stats)
            tick(item, status)
    return stats


def _extract_one(extractor: FaceExtractor, item: VideoItem, writer: FaceSetWriter, stats: ExtractStats) -> str:
    from dfscan.errors import DfscanError  # noqa: PLC0415

    if writer.has_video(item.video or item.path.name):
        stats.skipped_done += 1
        return "skipped"
    try:
        n = extractor.extract(item, writer)
    except (DfscanError, OSError, ValueError, MemoryError) as exc:
        log.warning("skipped %s: %s", item.path, exc)
        stats.failed += 1
        return "failed"
    except Exception as exc:  # noqa: BLE001 - one broken video must not end a run of thousands
        log.warning("skipped %s: %s: %s", item.path, type(exc).__name__, exc)
        stats.failed += 1
        return "failed"
    stats.videos += 1
    stats.faces += n
    if n == 0:
        stats.no_face += 1
        return "no_face"
    return "done"


class _Progress:
    """Context manager giving a `tick(item, status)` callable: a rich bar, a user callback, or nothing."""

    def __init__(self, progress: bool | ProgressHook, total: int):
        self.progress, self.total, self._bar = progress, total, None

    def __enter__(self) -> ProgressHook:
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return lambda item, status: None
        from rich.progress import (  # noqa: PLC0415
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn)

        self._bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[last]}"), transient=False)
        self._bar.start()
        task = self._bar.add_task("extract", total=self.total, last="")
        return lambda item, status: self._bar.update(task, advance=1, last=f"{item.path.name} {status}")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

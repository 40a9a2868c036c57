"""The one face-set format: `images/` + `labels.csv` (+ `faceset.json`). `dfscan extract` writes it, `dfscan
train` and `dfscan eval` read it. The columns are those of the DFDC faces set (file,label,split,source,video,
width,height), with optional `frame` and `track` for faces extracted from videos by dfscan itself and
`domain` (where the footage comes from: batches are balanced over it, validation is reported per domain).

`faceset.json` records how the crops were cut (detector settings, crop size and margin around the
detector's box) so training, the checkpoint and the bundle manifest carry the scanner's crop geometry.
A face set without it (the shared DFDC crops) gets the geometry measured on it (`KNOWN_GEOMETRY`)."""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from dfscan.errors import UnreadableImage, UsageError
from dfscan.inputs import confined, labels_text
from dfscan.outputs import atomic_write_text, open_append

LABELS = ("real", "fake")
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("file", "label", "split", "source", "video", "width", "height")
GEOMETRY_FILE = "faceset.json"
# Crop margin (around the MTCNN box, as crop_face takes it) of face sets made elsewhere, measured by running
# dfscan's detector on their crops (bench/measure_geometry.py): DFDC crops are ~10% tighter than the box.
KNOWN_GEOMETRY = {"dfdc_faces": {"crop": {"margin": -0.1, "size": 224}, "measured": True,
                                 "history": "JPEG, upscaled from a median 155 px face box"}}


@dataclass
class FaceRecord:
    file: str                 # relative to images/
    label: str                # real | fake
    split: str                # train | val | test
    source: str               # the real video the face comes from: the group key for splits
    video: str                # the video the crop was cut from
    width: int = 0            # face box size in the original frame
    height: int = 0
    frame: int | None = None  # frame index in `video`, when extracted by dfscan
    track: int | None = None  # face track id within `video`
    domain: str = ""          # footage kind / origin (e.g. dfdc, wild:<repository>); "" = the face set's own
    origin: str = ""          # the face set folder the row was read from (not a column)

    @property
    def is_fake(self) -> int:
        return int(self.label == "fake")


COLUMNS = tuple(f.name for f in fields(FaceRecord) if f.name != "origin")


def _parse_row(row: dict[str, str], line: int, csv_path: Path) -> FaceRecord:
    if any(value is None for key, value in row.items() if key is not None):
        raise ValueError(f"{csv_path}:{line}: bad row (fewer fields than the header)")
    try:
        record = FaceRecord(
            file=row["file"], label=row["label"].strip().lower(), split=row["split"].strip().lower(),
            source=row["source"], video=row["video"],
            width=int(float(row.get("width") or 0)), height=int(float(row.get("height") or 0)),
            frame=int(row["frame"]) if row.get("frame") not in (None, "") else None,
            track=int(row["track"]) if row.get("track") not in (None, "") else None,
            domain=(row.get("domain") or "").strip(),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{csv_path}:{line}: bad row ({exc})") from None
    if record.label not in LABELS:
        raise ValueError(f"{csv_path}:{line}: label {record.label!r} is not one of {LABELS}")
    if record.split not in SPLITS:
        raise ValueError(f"{csv_path}:{line}: split {record.split!r} is not one of {SPLITS}")
    try:
        confined(csv_path.parent / "images", record.file)
    except ValueError as exc:
        raise ValueError(f"{csv_path}:{line}: {exc}") from None
    return record


def _check_one_split_and_label(records: list[FaceRecord], csv_path: Path) -> None:
    """An image listed twice with another split or label would be trained on and validated on (or taught both
    ways): refused, as `extract csv` refuses such a list. Rows repeated as they are change nothing and pass."""
    first: dict[str, tuple[int, FaceRecord]] = {}
    for line, record in enumerate(records, start=2):
        earlier = first.setdefault(record.file, (line, record))
        if (earlier[1].split, earlier[1].label) != (record.split, record.label):
            raise ValueError(f"{csv_path}:{line}: {record.file} is also on line {earlier[0]} with another split or "
                             f"label ({earlier[1].split}/{earlier[1].label} there, {record.split}/{record.label} here)")


class FaceSet:
    """A face set on disk. Records are read once; images are read on demand."""

    def __init__(self, root: str | Path, records: list[FaceRecord]):
        self.root = Path(root)
        self.records = records
        self._geometries: dict[str, dict] = {}

    @classmethod
    def load(cls, root: str | Path) -> "FaceSet":
        root = Path(root)
        csv_path = root / "labels.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{root} is not a face set: no labels.csv")
        with labels_text(csv_path), open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{csv_path} lacks columns {missing}")
            records = [_parse_row(row, i + 2, csv_path) for i, row in enumerate(reader)]
        _check_one_split_and_label(records, csv_path)
        for record in records:
            record.origin = str(root)
        return cls(root, records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def geometry(self) -> dict:
        """How the crops were cut: {"crop": {"size", "margin"}, "detector": {...}}, from faceset.json,
        else a measured entry of KNOWN_GEOMETRY, else {} (unknown)."""
        return read_geometry(self.root)

    def domain_of(self, record: FaceRecord) -> str:
        return record.domain or self.name

    def geometry_of(self, record: FaceRecord) -> dict:
        """The crop geometry of the face set the record was read from (see `geometry`)."""
        origin = record.origin or str(self.root)
        if origin not in self._geometries:
            self._geometries[origin] = read_geometry(origin)
        return self._geometries[origin]

    def split(self, name: str) -> list[FaceRecord]:
        return [r for r in self.records if r.split == name]

    @classmethod
    def union(cls, roots: "list[str | Path]") -> "FaceSet":
        """Several face sets as one: each record's file becomes its absolute path and its domain, where the
        row names none, the name of the face set it came from (batches are balanced over domains)."""
        if len(roots) == 1:
            return cls.load(roots[0])
        records: list[FaceRecord] = []
        for root in roots:
            part = cls.load(root)
            for record in part.records:
                record.file = str(part.image_path(record).resolve())
                record.domain = part.domain_of(record)
                records.append(record)
        return cls(Path(roots[0]), records)

    def image_path(self, record: FaceRecord) -> Path:
        return self.root / "images" / record.file

    def read_image(self, record: FaceRecord) -> np.ndarray:
        return read_rgb(self.image_path(record))

    def summary(self) -> dict[str, dict[str, int]]:
        counts = Counter((r.split, r.label) for r in self.records)
        return {s: {lab: counts[(s, lab)] for lab in LABELS} for s in sorted({r.split for r in self.records})}


def read_geometry(root: str | Path) -> dict:
    path = Path(root) / GEOMETRY_FILE
    if path.is_file():
        return _read_geometry_file(path)
    return dict(KNOWN_GEOMETRY.get(Path(root).resolve().name, {}))


def training_geometry(roots: "list[str | Path]", margin: float | None = None) -> tuple[float, dict]:
    """The crop margin a model trained on these face sets must be scanned with, and each set's geometry.

    An explicit `margin` wins. Otherwise the face sets cut by dfscan (faceset.json) must agree on one
    margin, the one the scanner will use; sets with only a measured geometry (shared DFDC crops) are
    trained on as they are and do not set it, unless they are all there is."""
    geometries = {str(root): read_geometry(root) for root in roots}
    if margin is None:
        own = {float(g["crop"]["margin"]) for g in geometries.values() if "crop" in g and not g.get("measured")}
        measured = {float(g["crop"]["margin"]) for g in geometries.values() if "crop" in g and g.get("measured")}
        candidates = own or measured
        if len(candidates) > 1:
            raise ValueError(f"the face sets were cut with different margins {sorted(candidates)}: "
                             "re-extract them alike or give --crop-margin")
        margin = candidates.pop() if candidates else 0.0
    return float(margin), geometries


def _read_geometry_file(path: Path) -> dict:
    try:
        geometry = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # bad JSON or not UTF-8
        raise ValueError(f"{path}: not a face set's geometry file ({exc})") from None
    if not isinstance(geometry, dict):
        raise ValueError(f"{path}: not a face set's geometry file (a JSON object)")
    return geometry


def write_geometry(root: str | Path, geometry: dict) -> None:
    atomic_write_text(Path(root) / GEOMETRY_FILE, json.dumps(geometry, indent=2) + "\n")


def read_rgb(path: str | Path) -> np.ndarray:
    # decoded from bytes: cv2.imread of a missing file prints OpenCV's own warning lines before our one-line error
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise UnreadableImage(f"cannot read image {path}: {exc.strerror or exc}") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UnreadableImage(f"cannot read image {path}: not an image OpenCV decodes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_crop(path: str | Path, size: int) -> np.ndarray:
    """A face-set crop as the model sees it, in training and in `dfscan eval` alike: RGB uint8 resized to
    size x size (INTER_AREA when a side shrinks, linear when it only grows). Crops are already faces: they
    are resized, never re-cropped."""
    image = read_rgb(path)
    if image.shape[:2] != (size, size):
        shrink = image.shape[0] > size or image.shape[1] > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return image


def crop_batches(face_set: FaceSet, records: Sequence[FaceRecord], size: int, batch: int = 256
                 ) -> Iterator[np.ndarray]:
    """(n, size, size, 3) uint8 crops of `records` in order (`load_crop`), `batch` at a time."""
    for start in range(0, len(records), batch):
        yield np.stack([load_crop(face_set.image_path(r), size) for r in records[start:start + batch]])


class FaceSetWriter:
    """Appends crops and rows to a face set; safe to reopen to resume (rows already written are kept,
    `has_video` tells which videos are done). Each row is flushed as it is written."""

    def __init__(self, root: str | Path, jpeg_quality: int = 95, geometry: dict | None = None,
                 same: Sequence[str] = ("crop",)):
        """geometry: what made the crops (faceset.json); a face set is resumed only where the entries named in
        `same` are as they were (the crop always; `dfscan sbi` also its copies, seed and view settings)."""
        self.root = Path(root)
        self.csv_path = self.root / "labels.csv"
        self.jpeg_quality = jpeg_quality
        self.root.mkdir(parents=True, exist_ok=True)
        if geometry is not None:
            self._check_geometry(geometry, same)
        (self.root / "images").mkdir(exist_ok=True)
        self._done_videos, self._done_files = self._read_done()
        new_file = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        columns = COLUMNS if new_file else self._existing_columns()
        self._fh = open_append(self.csv_path)  # a link there is replaced, never written through
        self._writer = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore")
        if new_file:
            self._writer.writeheader()
            self._fh.flush()

    def _check_geometry(self, geometry: dict, same: Sequence[str]) -> None:
        """One face set, one way of making it: resuming with other crop settings would mix two (and a pool
        resumed with other copies or seed would skip the faces done and say nothing)."""
        path = self.root / GEOMETRY_FILE
        if path.is_file():
            old = _read_geometry_file(path)
            changed = [key for key in same if old.get(key) != geometry.get(key)]
            if changed:
                was = ", ".join(f"{key} {old.get(key)!r}, not {geometry.get(key)!r}" for key in changed)
                raise UsageError(f"{self.root} was made with other settings ({was}): use another output folder")
        elif self.csv_path.exists() and self._read_done() != (set(), set()):
            # rows this writer would add to, under a geometry that was never theirs
            raise UsageError(f"{self.root} holds a face set dfscan did not write (labels.csv, no {GEOMETRY_FILE}): "
                             "give a new or empty output folder")
        else:
            write_geometry(self.root, geometry)

    def _existing_columns(self) -> tuple[str, ...]:
        with labels_text(self.csv_path), open(self.csv_path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
        return tuple(header) if header else COLUMNS

    def _read_done(self) -> tuple[dict[str, str], set[str]]:
        """The videos (with their labels) and the files that rows already name (what a resumed run skips)."""
        if not self.csv_path.is_file():
            return {}, set()
        with labels_text(self.csv_path), open(self.csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        videos = {r["video"]: r.get("label") or "" for r in rows if r.get("video")}
        return videos, {r["file"] for r in rows if r.get("file")}

    def has_video(self, video: str) -> bool:
        return video in self._done_videos

    def done_label(self, video: str) -> str | None:
        """The label the face set's rows give `video`, or None where it has no row."""
        return self._done_videos.get(video)

    def has_file(self, file: str) -> bool:
        return file in self._done_files

    def write_image(self, image: np.ndarray, record: FaceRecord) -> None:
        """Write the crop only; rows come later with `add_rows`, so a killed run never lists a half video."""
        path = self.root / "images" / record.file
        path.parent.mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]):
            raise OSError(f"cannot write {path}")

    def add(self, image: np.ndarray, record: FaceRecord) -> None:
        self.write_image(image, record)
        self.add_rows([record])

    def add_rows(self, records: Iterable[FaceRecord]) -> None:
        for record in records:
            self._writer.writerow({k: ("" if v is None else v) for k, v in asdict(record).items() if k != "origin"})
            self._done_videos[record.video] = record.label
            self._done_files.add(record.file)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "FaceSetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_split(face_set: FaceSet, split: str) -> Iterator[tuple[FaceRecord, np.ndarray]]:
    for record in face_set.split(split):
        yield record, face_set.read_image(record)

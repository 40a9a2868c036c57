"""The model bundle format: a directory holding embedder.onnx, classifier.onnx and manifest.json.

The manifest carries everything that changes what a score means: crop size and margin, normalisation,
default frame count, aggregation rule, threshold, calibration and named operating points. A scan reads
them from the bundle, never from its own defaults, so one model can never be run with another's crop
or threshold. Every file's SHA-256 is recorded and checked on load.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dfscan.errors import ModelError
from dfscan.settings import AGGREGATIONS, check_manifest

BUNDLE_FORMAT = "dfscan-bundle/1"
MANIFEST_NAME = "manifest.json"
ENSEMBLE_COMBINATIONS = ("vote", "mean")
__all__ = ["AGGREGATIONS", "ENSEMBLE_COMBINATIONS", "Manifest", "load_manifest", "write_bundle"]


@dataclass
class Preprocess:
    input_size: int                     # square crop side fed to the embedder
    crop_margin: float                  # added to the detector box's longer side, as a fraction (< 0: tighter)
    mean: list[float]                   # per RGB channel, applied to pixels scaled to [0, 1]
    std: list[float]


@dataclass
class ScanDefaults:
    frames: int = 32
    aggregation: str = "mean"           # per-track rule: mean | median | max | topk
    top_k: int = 5                      # used by "topk"
    threshold: float = 0.5              # on the calibrated fake probability
    operating_point: str | None = None  # name of the operating point `threshold` came from


def _built(klass: type, entries: Any, section: str) -> Any:
    """`klass(**entries)`, or a ModelError that names what is missing or unknown in the manifest's words."""
    where = f"its {section} section" if section else "it"
    if not isinstance(entries, dict):
        raise ModelError(f"malformed manifest: {where} is not a JSON object" if section else
                         "malformed manifest: not a JSON object")
    known = {f.name: f for f in dataclasses.fields(klass)}
    missing = [name for name, f in known.items() if name not in entries
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    unknown = sorted(set(entries) - set(known))
    if missing or unknown:
        raise ModelError(f"malformed manifest: {where} "
                         + "; ".join(part for part in (f"lacks {', '.join(missing)}" if missing else "",
                                                       f"has unknown entries {', '.join(unknown)}" if unknown else "")
                                     if part))
    return klass(**entries)


@dataclass
class Manifest:
    name: str
    version: str
    preprocess: Preprocess
    embedding_dim: int
    files: dict[str, dict[str, str]]    # role ("embedder", "classifier") -> {"path", "sha256"}
    scan: ScanDefaults = field(default_factory=ScanDefaults)
    # {"method": "temperature", "temperature": T} or {"method": "isotonic", "x": [...], "y": [...]}; None = raw
    calibration: dict[str, Any] | None = None
    operating_points: dict[str, float] = field(default_factory=dict)
    # score -> likelihood ratio (dfscan.likelihood); None in bundles made before it existed
    likelihood_ratio: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    format: str = BUNDLE_FORMAT
    # an ensemble bundle (Kumar & Bhavsar's bagging): {"combination": "vote" | "mean", "members": [
    # {"path": "member_0", "threshold": t}, ...]}; each member is a bundle in that sub-directory, its
    # manifest listed (and hashed) in `files` as "member_<i>"
    ensemble: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        try:
            fmt = data.get("format")
            if fmt != BUNDLE_FORMAT:
                raise ModelError(f"unsupported bundle format {fmt!r} (expected {BUNDLE_FORMAT!r})")
            for key in ("name", "version"):
                if not isinstance(data.get(key), str):
                    raise ModelError(f"malformed manifest: its {key} is not a text")
            entries = dict(data)
            entries["preprocess"] = _built(Preprocess, data.get("preprocess"), "preprocess")
            entries["scan"] = _built(ScanDefaults, data.get("scan"), "scan")
            if "threshold" not in data["scan"]:  # ScanDefaults has one for code building a bundle; a bundle states it
                raise ModelError("malformed manifest: its scan section lacks threshold")
            manifest = _built(cls, entries, "")
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed manifest: {exc}") from None
        manifest.validate()
        return manifest

    @property
    def scores_identity(self) -> str:
        """What made a score: name@version and the hashes of the files that score (not the LR calibration, which
        `calibrate-lr` refits on these scores). Scores files carry it, so a refit can tell another model's."""
        hashes = ",".join(f"{role}:{entry['sha256'][:12]}" for role, entry in sorted(self.files.items()))
        return f"{self.name}@{self.version} ({hashes})"

    def validate(self) -> None:
        check_manifest(self)  # every value that changes a score: dfscan.settings, the one place
        if self.likelihood_ratio is not None:
            from dfscan.likelihood import check_calibration  # noqa: PLC0415

            try:
                check_calibration(self.likelihood_ratio)
            except ValueError as exc:
                raise ModelError(f"manifest {exc}") from None
        if not isinstance(self.files, dict) or not all(
                isinstance(entry, dict) and isinstance(entry.get("sha256"), str) for entry in self.files.values()):
            raise ModelError("manifest files must map each role to its path and sha256 (a hex string)")
        if self.ensemble is not None:
            self._validate_ensemble()
            return
        for role in ("embedder", "classifier"):
            entry = self.files.get(role)
            if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
                raise ModelError(f"manifest lacks files.{role}.path / sha256")
            if not isinstance(entry["path"], str) or Path(entry["path"]).name != entry["path"]:
                raise ModelError(f"manifest file path {entry['path']!r} must be a plain file name")

    def _validate_ensemble(self) -> None:
        members = self.ensemble.get("members") if isinstance(self.ensemble, dict) else None
        if (not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members)
                or self.ensemble.get("combination") not in ENSEMBLE_COMBINATIONS):
            raise ModelError(f"ensemble needs a combination in {ENSEMBLE_COMBINATIONS} and two members or more, "
                             "each an object with its path")
        for i, member in enumerate(members):
            entry = self.files.get(f"member_{i}")
            path = Path(str(member.get("path", "")))
            if not entry or "sha256" not in entry or entry.get("path") != f"{path.as_posix()}/{MANIFEST_NAME}":
                raise ModelError(f"manifest lacks files.member_{i} (the member's manifest and its sha256)")
            if path.is_absolute() or len(path.parts) != 1 or path.name in ("", ".", ".."):
                raise ModelError(f"ensemble member path {str(path)!r} must be a sub-directory name")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_hash(bundle_dir: Path) -> str:
    """One hash naming the whole bundle: SHA-256 of its manifest file (which holds the files' hashes)."""
    return sha256_file(Path(bundle_dir) / MANIFEST_NAME)


def load_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest; with verify, check every file's SHA-256 too."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise ModelError(f"model bundle {bundle_dir} is not a directory")
    if not path.is_file():
        raise ModelError(f"model bundle {bundle_dir} has no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    # ValueError: bad JSON, or an integer past Python's 4,300 digits; RecursionError: nested past Python's stack
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object")
    manifest = Manifest.from_dict(data)
    if verify:
        for role, entry in manifest.files.items():
            file_path = bundle_dir / entry["path"]
            if not file_path.is_file():
                raise ModelError(f"model bundle {bundle_dir} lacks {entry['path']} ({role})")
            actual = sha256_file(file_path)
            if actual != entry["sha256"]:
                raise ModelError(
                    f"{file_path} does not match its manifest hash (sha256 {actual[:12]}... != "
                    f"{entry['sha256'][:12]}...): the bundle is corrupt or was edited"
                )
    return manifest


def write_bundle(
    bundle_dir: str | Path,
    embedder_onnx: str | Path,
    classifier_onnx: str | Path,
    manifest: Manifest,
) -> Path:
    """Copy the two ONNX files into `bundle_dir`, record their hashes in the manifest and write it."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for role, src in (("embedder", Path(embedder_onnx)), ("classifier", Path(classifier_onnx))):
        dst = bundle_dir / f"{role}.onnx"
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        files[role] = {"path": dst.name, "sha256": sha256_file(dst)}
    manifest.files = files
    manifest.validate()
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return bundle_dir

"""Self-blended images (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022).

A real face is blended into a slightly altered copy of itself: the copy gets colour and frequency jitter
(RGB/HSV shift, brightness/contrast, downscale or sharpen) and a small affine; the blend mask is the convex
hull of the 68 facial landmarks, elastically deformed, blurred and scaled by a random blend ratio. The
result carries what face swaps share (a blending boundary, a colour and sharpness mismatch inside it) and
nothing of any one manipulation tool, which is why it generalises across datasets.

Two ways in: `self_blend(image, landmarks, rng)` for fresh pseudo-fakes each epoch (end-to-end training),
and `build_pool(...)` for a pre-generated face set (training with cached frozen stages). The pool writes
every view it makes, real or blended, through the same re-crop, degradation and PNG path, so the two
classes share their image history and differ only by the blend.

Landmarks: dlib's 68-point shape predictor from the `face-recognition-models` package. That model was
trained on iBUG 300-W, whose licence excludes commercial use: weights trained with SBI pseudo-fakes made
with it inherit that restriction (said in the model card).
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from dfscan.errors import UsageError
from dfscan.faces.crop import crop_face, square_box

log = logging.getLogger(__name__)

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_HELP = ("SBI needs dlib's 68-point landmark model: pip install dlib-bin face-recognition-models "
                  "(the model is for non-commercial use: iBUG 300-W)")
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # the paper's list: full blends are the common case


# ---------------------------------------------------------------- landmarks

def predictor_path() -> Path:
    """The .dat file inside face_recognition_models, found without importing it (its __init__ needs
    pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(LANDMARKS_HELP)
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; {LANDMARKS_HELP}")
    return path


class Landmarker:
    """68 facial landmarks given the face's detector box (about 2.4 ms a face on one CPU core)."""

    def __init__(self, path: str | Path | None = None):
        try:
            import dlib  # noqa: PLC0415
        except ImportError:
            raise RuntimeError(LANDMARKS_HELP) from None
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(path or predictor_path()))

    def __call__(self, rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        shape = self.predictor(np.ascontiguousarray(rgb), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def box_in_crop(side: int, margin: float) -> tuple[float, float, float, float]:
    """The detector box a square crop of `side` pixels cut with `margin` (crop_face's) was centred on."""
    box_side = side / (1.0 + margin)
    lo = (side - box_side) / 2.0
    return lo, lo, lo + box_side, lo + box_side


# ---------------------------------------------------------------- the blend

def hull_mask(shape: tuple[int, int], landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convex hull of the landmarks as a float mask; half the time the brows are lifted so the hull takes
    in the forehead too (the paper draws among several hull shapes)."""
    points = landmarks.copy()
    if rng.random() < 0.5:
        brows = points[17:27]
        face_h = points[:, 1].max() - points[:, 1].min()
        points = np.concatenate([points, brows - [0.0, face_h * rng.uniform(0.1, 0.25)]])
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(points.astype(np.int32)), 1)
    return mask.astype(np.float32)


def jitter_source(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour (RGB shift, hue/saturation/value, brightness/contrast) then frequency (downscale or sharpen)."""
    img = image.astype(np.float32)
    if rng.random() < 0.3:
        img += rng.uniform(-20, 20, size=3)
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv += [rng.uniform(-0.3, 0.3) * 10, rng.uniform(-0.3, 0.3) * 40, rng.uniform(-0.3, 0.3) * 40]
        hsv[..., 0] %= 180
        img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < 0.3:
        img = (img - 128.0) * (1 + rng.uniform(-0.1, 0.1)) + 128.0 + 255.0 * rng.uniform(-0.1, 0.1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    if rng.random() < 0.5:  # downscale by 2 or 4 and back: the blurrier inside of many swaps
        f = int(rng.choice([2, 4]))
        small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha, lightness = rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.0)
    kernel = np.array([[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]], np.float32)
    kernel = (1 - alpha) * np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32) + alpha * kernel / kernel.sum()
    return np.clip(cv2.filter2D(img.astype(np.float32), -1, kernel), 0, 255).astype(np.uint8)


def random_affine(source: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same small shift (<= 3%) and scale (0.95-1.05) for source and mask, then an elastic warp of the
    mask alone, so the blend boundary is not exactly the landmark hull."""
    h, w = mask.shape
    scale = rng.uniform(0.95, 1 / 0.95)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.03, 0.03) * h
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    m[:, 2] += (tx, ty)
    source = cv2.warpAffine(source, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, m, (w, h))
    return source, elastic(mask, rng, alpha=50.0 * w / 256, sigma=7.0 * w / 256)


def elastic(mask: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    h, w = mask.shape
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def soften_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, cut back to the inner core, blur again with random kernels (at a 192-256 px working size, so
    the softness is relative to the face), then scale by a blend ratio drawn from BLEND_RATIOS."""
    h, w = mask.shape
    work = cv2.resize(mask, (int(rng.integers(192, 257)), int(rng.integers(192, 257))))
    k1, k2 = (int(rng.choice(np.arange(5, 26, 2))) for _ in range(2))
    soft = cv2.GaussianBlur(work, (k1, k1), 0)
    soft = np.where(soft / max(float(soft.max()), 1e-6) < 1.0, 0.0, 1.0).astype(np.float32)
    soft = cv2.GaussianBlur(soft, (k2, k2), float(rng.integers(5, 46)))
    soft /= max(float(soft.max()), 1e-6)
    soft = cv2.resize(soft, (w, h))
    return np.clip(soft, 0, 1) * float(rng.choice(BLEND_RATIOS))


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-fake RGB uint8, blend mask in [0, 1]) made from one real face and its landmarks."""
    target = image
    source = image.copy()
    if rng.random() < 0.5:  # jitter either side: the inside or the outside of the boundary differs
        source = jitter_source(source, rng)
    else:
        target = jitter_source(target, rng)
    mask = hull_mask(image.shape[:2], landmarks, rng)
    source, mask = random_affine(source, mask, rng)
    mask = soften_mask(mask, rng)[..., None]
    blended = mask * source.astype(np.float32) + (1 - mask) * target.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8), mask[..., 0]


# ---------------------------------------------------------------- views shared by both classes

@dataclass(frozen=True)
class ViewSettings:
    """How a stored crop becomes a training view: re-cut to the model's margin (with jitter), resized
    to its input, and degraded the way footage is (the same draw for real and blended views)."""
    size: int = 128
    margin: float = 0.15              # the bundle's crop margin around the detector box
    margin_jitter: float = 0.1        # uniform +- around `margin` (scale jitter), where the crop allows
    shift_jitter: float = 0.03        # fraction of the box side
    jpeg_p: float = 0.5               # probability of a JPEG round trip at quality 40-95
    blur_p: float = 0.2               # probability of a down-and-up resize by 0.5-0.8
    lowres_p: float = 0.0             # probability of a small face: down to 32-96 px and up, as the scanner
                                      # upscales faces of a crowd (what a model must not take for a blend)


def recut(image: np.ndarray, stored_margin: float, view: ViewSettings, rng: np.random.Generator) -> np.ndarray:
    """Cut a view with margin ~ view.margin out of a crop stored with `stored_margin`."""
    side = image.shape[0]
    box = np.asarray(box_in_crop(side, stored_margin))
    margin = view.margin + rng.uniform(-view.margin_jitter, view.margin_jitter)
    box_side = box[2] - box[0]
    box = box + np.tile(rng.uniform(-view.shift_jitter, view.shift_jitter, 2) * box_side, 2)
    sx1, sy1, sx2, sy2 = square_box(box, margin)
    if sx1 < 0 or sy1 < 0 or sx2 > side or sy2 > side:  # not enough context stored: use the widest view there is
        margin = min(margin, stored_margin)
        box = np.asarray(box_in_crop(side, stored_margin))
    return crop_face(image, box, view.size, margin)


def degrade(image: np.ndarray, view: ViewSettings, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < view.lowres_p:
        h, w = image.shape[:2]
        side = int(rng.integers(32, 97))
        if side < min(h, w):
            small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
            image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < view.blur_p:
        h, w = image.shape[:2]
        f = rng.uniform(0.5, 0.8)
        small = cv2.resize(image, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < view.jpeg_p:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 96))])
        if ok:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return image


# ---------------------------------------------------------------- the pool

@dataclass
class PoolStats:
    reals: int = 0
    fakes: int = 0
    blends: int = 0
    failures: list[str] = field(default_factory=list)  # "file: reason", one a face that could not be read

    @property
    def skipped(self) -> int:
        return len(self.failures)


def build_pool(face_set_dir: str | Path, out_dir: str | Path, view: ViewSettings, copies: int = 2,
               splits: Sequence[str] = ("train", "val"), domain: str | None = None, limit: int | None = None,
               fakes: bool = True, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> PoolStats:
    """Write a face set of views of `face_set_dir`: per real face `copies` (real view, self-blended view)
    pairs, per fake face `copies` fake views (if `fakes`), all re-cut, degraded and saved alike (PNG).

    `limit` caps the real and the fake faces taken from each split (a class-balanced, seeded subset).
    Rows keep the source face's split, source and video; `domain` defaults to the source face set's name.
    """
    from dfscan.faceset import FaceSet, FaceSetWriter  # noqa: PLC0415

    source, target = Path(face_set_dir).resolve(), Path(out_dir).resolve()
    if target == source or source in target.parents:
        raise UsageError(f"--out {out_dir} lies inside the face set {face_set_dir} it is made from: give another folder")
    faces = FaceSet.load(face_set_dir)
    geometry = faces.geometry
    if "crop" not in geometry:
        raise ValueError(f"{face_set_dir}: unknown crop geometry (no faceset.json): extract it with dfscan extract")
    stored_margin = float(geometry["crop"]["margin"])
    domain = domain or faces.name
    records = _pick(faces, splits, limit, fakes, seed)
    landmarker = Landmarker()
    # where the stored crops are tighter than asked, the views are the whole stored crop: say so
    margin = min(view.margin, stored_margin)
    out_geometry = {"crop": {"size": view.size, "margin": margin, "margin_jitter": view.margin_jitter},
                    "detector": geometry.get("detector", {}), "made_by": "dfscan sbi",
                    "from": {"face_set": str(face_set_dir), "geometry": geometry}, "copies": copies,
                    "view": view.__dict__, "seed": seed}
    stats = PoolStats()
    with FaceSetWriter(out_dir, geometry=out_geometry, same=("crop", "copies", "seed", "view")) as writer:
        for n, (i, record) in enumerate(records):
            if writer.has_file(f"{_stem(record)}_v0.png"):  # resume at whole source faces: their rows land together
                continue
            rows = _views_of(faces, record, i, stored_margin, landmarker, view, copies, domain, seed, writer, stats)
            writer.add_rows(rows)
            if progress:
                progress(n + 1, len(records))
    return stats


def _pick(faces, splits: Iterable[str], limit: int | None, fakes: bool, seed: int) -> list[tuple[int, object]]:
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, object]] = []
    indexed = list(enumerate(faces.records))
    for split in splits:
        for label in ("real", "fake") if fakes else ("real",):
            group = [(i, r) for i, r in indexed if r.split == split and r.label == label]
            if limit is not None and len(group) > limit:
                group = [group[j] for j in sorted(rng.choice(len(group), limit, replace=False))]
            chosen += group
    return chosen


def _stem(record) -> str:
    return Path(record.file).with_suffix("").as_posix().replace("/", "__")


def _views_of(faces, record, index: int, stored_margin: float, landmarker: Landmarker,
              view: ViewSettings, copies: int, domain: str, seed: int, writer, stats: PoolStats) -> list:
    from dfscan.faceset import FaceRecord  # noqa: PLC0415

    try:
        image = faces.read_image(record)
    except ValueError as exc:
        path = faces.image_path(record)
        log.info("skipped %s: %s", path, exc)  # the command line prints stats.failures
        stats.failures.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
        return []
    landmarks = landmarker(image, box_in_crop(image.shape[0], stored_margin)) if record.label == "real" else None
    rows = []
    stem = _stem(record)
    for k in range(copies):
        rng = np.random.default_rng([seed, index, k])
        outputs = [("real" if record.label == "real" else "fake", "v", image)]
        if landmarks is not None:
            outputs.append(("fake", "sbi", self_blend(image, landmarks, rng)[0]))
        view_seed = rng.integers(1 << 31)
        for label, kind, picture in outputs:
            view_rng = np.random.default_rng(view_seed)  # the real view and its blend get the same cut and degradation
            cut = degrade(recut(picture, stored_margin, view, view_rng), view, view_rng)
            name = f"{stem}_{kind}{k}.png"
            row = FaceRecord(file=name, label=label, split=record.split, source=record.source, video=record.video,
                             width=record.width, height=record.height, frame=record.frame, track=record.track,
                             domain=domain)
            _write_png(writer.root / "images" / name, cut)
            rows.append(row)
            if kind == "sbi":
                stats.blends += 1
            elif label == "real":
                stats.reals += 1
            else:
                stats.fakes += 1
    return rows


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {path}")

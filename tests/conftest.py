"""Shared test fixtures: paths to ../shared, tiny model bundles, generated videos with and without faces."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests/videos.py, tests/bundles.py

from bundles import make_tiny_bundle  # noqa: E402
from videos import write_video  # noqa: E402

SHARED = TESTS.parents[1] / "shared"
REAL_CLIPS = SHARED / "clips" / "real"
DFDC_FACES = SHARED / "datasets" / "dfdc_faces"
ASTRONAUT = TESTS / "fixtures" / "mtcnn" / "astronaut.jpg"  # NASA, public domain


def need_shared_clips() -> Path:
    if not (REAL_CLIPS / "talking_d0.mp4").is_file():
        pytest.skip(f"real clips not available at {REAL_CLIPS} (../shared beside the checkout)")
    return REAL_CLIPS


def dfdc_subset(root: Path, per_group: int, splits: tuple[str, ...] = ("val",), skip: int = 0) -> Path:
    """`per_group` real and fake rows (after the first `skip`) of each split of the shared DFDC crops as a
    face set (images linked, not copied); skips the test where the shared crops are absent."""
    if not (DFDC_FACES / "labels.csv").is_file():
        pytest.skip(f"shared DFDC faces not found at {DFDC_FACES}")
    lines = (DFDC_FACES / "labels.csv").read_text().splitlines()
    keep = [row for split in splits for label in ("real", "fake")
            for row in [r for r in lines[1:] if f",{label},{split}," in r][skip:skip + per_group]]
    root.mkdir(parents=True)
    (root / "labels.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    (root / "images").symlink_to(DFDC_FACES / "images")
    return root


@pytest.fixture(scope="session")
def real_clips() -> Path:
    return need_shared_clips()


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Tiny bundles: 'neutral' (random weights), 'all_fake' and 'all_real' (a huge logit bias)."""
    root = tmp_path_factory.mktemp("bundles")
    points = {"balanced": 0.5, "low-fpr": 0.9, "high-recall": 0.1}
    return {
        "neutral": make_tiny_bundle(root / "neutral", operating_points=points),
        "all_fake": make_tiny_bundle(root / "all_fake", bias=30.0, operating_points=points),
        "all_real": make_tiny_bundle(root / "all_real", bias=-30.0, operating_points=points),
    }


def astronaut_face() -> np.ndarray:
    """Head and shoulders from the astronaut photo (the face is about 100 px wide in this crop)."""
    image = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    return image[0:260, 60:330]


def face_frame(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """The astronaut photo, scaled to fit, drifting slowly right: one face, always fully visible."""
    face = astronaut_face()
    scale = 0.9 * height / face.shape[0]
    face = cv2.resize(face, (int(face.shape[1] * scale), int(face.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 40, np.uint8)
    x = min(5 + index, width - face.shape[1])
    y = (height - face.shape[0]) // 2
    canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
    return canvas


@pytest.fixture(scope="session")
def face_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "face.mp4"
    return write_video(path, n_frames=40, size=(320, 240), fps=10, frame_fn=face_frame)


@pytest.fixture(scope="session")
def blank_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "blank.mp4"
    return write_video(path, n_frames=20, size=(160, 120), fps=10)


def run_cli_without(module: str, args: list[str], env: dict[str, str] | None = None):
    """`dfscan ARGS` in a fresh interpreter where importing `module` fails, as on an install without it."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    code = f"import sys; sys.modules[{module!r}] = None\nfrom dfscan.cli import app\napp({args!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="Rewrite tests/fixtures/golden_scores.json from the shipped model (deliberate changes only).")

"""Augmentations by name: each builds, keeps shape and dtype; flip mirrors; unknown names fail."""

import pickle

import numpy as np
import pytest

pytest.importorskip("albumentations")

from dfscan.train.augment import AUGMENTATIONS, DEFAULT_AUGMENTATIONS, build_augment  # noqa: E402


def image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_keys_and_default_set():
    assert set(AUGMENTATIONS) == {"flip", "bc", "hsv", "isonoise", "gaussnoise", "downscale", "jpeg"}
    assert DEFAULT_AUGMENTATIONS == ("flip", "bc", "hsv", "jpeg")


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_name_keeps_shape_and_dtype(name):
    aug = build_augment([name])
    img = image()
    for _ in range(4):  # p = 0.5: exercise both branches
        out = aug(img)
        assert out.shape == img.shape and out.dtype == np.uint8


def test_each_transform_changes_the_image_when_forced():
    img = image()
    for name, make in AUGMENTATIONS.items():
        t = make()
        t.p = 1.0
        assert any(not np.array_equal(t(image=img)["image"], img) for _ in range(3)), name


def test_flip_mirrors():
    aug = build_augment(["flip"])
    img = image()
    outs = [aug(img) for _ in range(30)]
    assert all(np.array_equal(o, img) or np.array_equal(o, img[:, ::-1]) for o in outs)
    assert any(np.array_equal(o, img[:, ::-1]) for o in outs)


def test_default_pipeline_and_pickle():
    aug = pickle.loads(pickle.dumps(build_augment(DEFAULT_AUGMENTATIONS)))  # DataLoader workers
    out = aug(image())
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8


def test_empty_is_none_and_unknown_errors():
    assert build_augment([]) is None
    with pytest.raises(ValueError, match="valid: flip, bc, hsv"):
        build_augment(["flip", "mixup"])

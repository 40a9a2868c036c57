"""Embedding classifiers: fit on a separable toy set; ONNX output matches predict_proba."""

import numpy as np
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from dfscan.train.heads import CLASSIFIERS, classifier_to_onnx, fit_classifier, linear_head_to_onnx  # noqa: E402

DIM = 8


def toy(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-1.5, 1, (n, DIM)), rng.normal(1.5, 1, (n, DIM))]).astype(np.float32)
    return X, np.repeat([0, 1], n)


def run_onnx(path, X: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["embeddings"]
    assert [o.name for o in sess.get_outputs()] == ["prob_fake"]
    (out,) = sess.run(None, {"embeddings": X})
    assert out.shape == (len(X),) and out.dtype == np.float32
    return out


@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_fit_and_onnx_parity(kind, tmp_path):
    pytest.importorskip("skl2onnx")
    X, y = toy()
    est = fit_classifier(kind, X, y, seed=0)
    assert (est.predict(X) == y).mean() == 1.0
    X_test, _ = toy(seed=1)
    classifier_to_onnx(est, DIM, tmp_path / "classifier.onnx")
    prob = run_onnx(tmp_path / "classifier.onnx", X_test)
    np.testing.assert_allclose(prob, est.predict_proba(X_test)[:, 1], atol=1e-4)


def test_unknown_kind():
    with pytest.raises(ValueError, match="rf, sgd, logreg"):
        fit_classifier("svm", *toy())


@pytest.mark.parametrize("shape", [(DIM,), (1, DIM), (DIM, 1)])
def test_linear_head(shape, tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=DIM).astype(np.float32), np.float32(0.3)
    X, _ = toy()
    linear_head_to_onnx(w.reshape(shape), np.array([b]), tmp_path / "head.onnx")
    expected = 1 / (1 + np.exp(-(X.astype(np.float64) @ w + b)))
    np.testing.assert_allclose(run_onnx(tmp_path / "head.onnx", X), expected, atol=1e-5)


def test_linear_head_two_logits_is_softmax(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, DIM)), np.array([0.1, -0.2])
    X, _ = toy()
    linear_head_to_onnx(w, b, tmp_path / "head.onnx")
    logits = X.astype(np.float64) @ w.T + b
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(run_onnx(tmp_path / "head.onnx", X), softmax[:, 1], atol=1e-5)

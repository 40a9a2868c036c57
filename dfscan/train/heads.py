"""Classifiers on embeddings (Kumar & Bhavsar 2020: Random Forest / SGD; plus logistic regression)
and their export to the bundle's ``classifier.onnx``: input ``embeddings`` float32 [N, D], output
``prob_fake`` float32 [N] (probability of class 1 = fake).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

INPUT_NAME = "embeddings"
OUTPUT_NAME = "prob_fake"
OPSET = 17
ML_OPSET = 3

CLASSIFIERS = ("rf", "sgd", "logreg")


def fit_classifier(kind: str, X: np.ndarray, y: np.ndarray, seed: int = 0) -> ClassifierMixin | Pipeline:
    """Fits ``rf`` (Random Forest), ``sgd`` (logistic loss, so it has ``predict_proba``) or
    ``logreg`` on embeddings ``X`` [N, D] and labels ``y`` (0 real, 1 fake). The linear models
    get a ``StandardScaler`` in front."""
    if kind == "rf":
        est = RandomForestClassifier(random_state=seed)
    elif kind == "sgd":
        est = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=seed))
    elif kind == "logreg":
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    else:
        raise ValueError(f"unknown classifier {kind!r}; valid: {', '.join(CLASSIFIERS)}")
    return est.fit(np.asarray(X, dtype=np.float32), np.asarray(y).astype(np.int64))


def _fake_column(estimator) -> int:
    classes = list(estimator.classes_)
    if 1 not in classes:
        raise ValueError(f"classifier classes {classes} do not include 1 (fake)")
    return classes.index(1)


def _dedupe_opsets(model: onnx.ModelProto) -> None:
    versions: dict[str, int] = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())


def classifier_to_onnx(estimator, dim: int, path: str | os.PathLike) -> None:
    """Writes a fitted scikit-learn classifier (or pipeline) as ONNX via skl2onnx, its probability
    output reduced to the fake column: ``prob_fake`` [N]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, dim]))],
        options={"zipmap": False},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    _dedupe_opsets(model)  # skl2onnx can list the default domain twice
    graph = model.graph
    probs = next(o.name for o in graph.output if o.name != "label" and "prob" in o.name)
    graph.initializer.append(numpy_helper.from_array(np.array(_fake_column(estimator), dtype=np.int64), "fake_column"))
    graph.node.append(helper.make_node("Gather", [probs, "fake_column"], [OUTPUT_NAME], axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"]))
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))


def linear_head_to_onnx(weight: np.ndarray, bias: np.ndarray, path: str | os.PathLike) -> None:
    """Writes ``prob_fake = sigmoid(x @ w + b)`` as ONNX.

    ``weight`` is ``[D]``, ``[1, D]`` or ``[D, 1]`` (one fake logit, e.g. ``nn.Linear(D, 1)``), or
    ``[2, D]`` (real/fake logits under softmax, reduced to ``w_fake - w_real``)."""
    w = np.asarray(weight, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64).reshape(-1)
    if w.ndim == 2 and w.shape[0] == 2 and b.size == 2:
        w, b = w[1] - w[0], b[1:] - b[:1]  # softmax([l0, l1])[1] == sigmoid(l1 - l0)
    w = w.reshape(-1)
    if w.ndim != 1 or b.size != 1:
        raise ValueError(f"expected one logit: weight {np.shape(weight)}, bias {np.shape(bias)}")
    dim = w.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [INPUT_NAME, "weight"], ["xw"]),  # [N, D] @ [D] -> [N]
            helper.make_node("Add", ["xw", "bias"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME]),
        ],
        "linear_head",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
        initializer=[
            numpy_helper.from_array(w.astype(np.float32), "weight"),
            numpy_helper.from_array(np.float32(b[0]), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dfscan")
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))

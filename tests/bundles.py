"""A tiny, valid model bundle for tests: a random-projection embedder and a logistic classifier, written
as ONNX with onnx.helper and packed with `write_bundle`. Scores are meaningless but deterministic."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dfscan.model.manifest import Manifest, Preprocess, ScanDefaults, write_bundle

OPSET = 17
IR_VERSION = 8  # old enough for every onnxruntime dfscan supports


def _save(graph: Any, path: Path) -> Path:
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dfscan-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_embedder(path: Path, input_size: int, dim: int, rng: np.random.Generator) -> Path:
    """images [N,3,S,S] -> tanh(flatten(images) @ W) [N,dim], W a scaled Gaussian projection."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    n_in = 3 * input_size * input_size
    weight = (rng.standard_normal((n_in, dim)) / np.sqrt(n_in)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["proj"]),
         helper.make_node("Tanh", ["proj"], ["embeddings"])],
        "embedder",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, input_size, input_size])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(weight, "W")],
    )
    return _save(graph, path)


def make_classifier(path: Path, weights: np.ndarray, bias: float) -> Path:
    """embeddings [N,D] -> sigmoid(embeddings @ w + b) as prob_fake [N]."""
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    dim = len(weights)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["embeddings", "w"], ["logit1"]),
         helper.make_node("Add", ["logit1", "b"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["prob1"]),
         helper.make_node("Reshape", ["prob1", "shape"], ["prob_fake"])],
        "classifier",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("prob_fake", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(np.asarray(weights, np.float32).reshape(dim, 1), "w"),
         numpy_helper.from_array(np.asarray([bias], np.float32), "b"),
         numpy_helper.from_array(np.asarray([-1], np.int64), "shape")],
    )
    return _save(graph, path)


def make_tiny_bundle(bundle_dir: str | Path, input_size: int = 32, embedding_dim: int = 8, seed: int = 0,
                     crop_margin: float = 0.0, bias: float = 0.0, weight_scale: float = 4.0,
                     aggregation: str = "mean", top_k: int = 5, threshold: float = 0.5, frames: int = 8,
                     calibration: dict[str, Any] | None = None,
                     operating_points: dict[str, float] | None = None) -> Path:
    """Write a complete bundle to `bundle_dir` and return its path. `bias` shifts every logit (a large
    positive bias makes everything look fake, a large negative one everything real)."""
    rng = np.random.default_rng(seed)
    bundle_dir = Path(bundle_dir)
    with tempfile.TemporaryDirectory() as tmp:
        embedder = make_embedder(Path(tmp) / "embedder.onnx", input_size, embedding_dim, rng)
        weights = rng.standard_normal(embedding_dim) * weight_scale
        classifier = make_classifier(Path(tmp) / "classifier.onnx", weights, bias)
        manifest = Manifest(
            name="tiny-test", version="0.0.1",
            preprocess=Preprocess(input_size=input_size, crop_margin=crop_margin,
                                  mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]),
            embedding_dim=embedding_dim, files={},
            scan=ScanDefaults(frames=frames, aggregation=aggregation, top_k=top_k, threshold=threshold),
            calibration=calibration,
            operating_points=operating_points if operating_points is not None else {"balanced": threshold},
            license="test only",
        )
        return write_bundle(bundle_dir, embedder, classifier, manifest)


def checkpoint_with_torch_val_scores(faces: Path, path: Path, seed: int = 0, size: int = 64) -> dict[str, Any]:
    """A bce checkpoint on the face set `faces` (ImageNet EfficientNet-Lite0, a random linear head drawn with
    `seed`, its other layers nudged by `seed`), holding the val scores torch gives its val faces."""
    import torch  # noqa: PLC0415

    from dfscan.faceset import FaceSet  # noqa: PLC0415
    from dfscan.train import export as ex  # noqa: PLC0415
    from dfscan.train.data import FaceDataset, select_records  # noqa: PLC0415
    from dfscan.train.recipes import ImageEmbedder, RecipeConfig, _meta, build_net  # noqa: PLC0415
    cfg = RecipeConfig(recipe="bce", dataset=str(faces), input_size=size, pretrained=True, proj_dim=16)
    net = build_net(cfg).eval()
    if seed:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in net.parameters():
                param.add_(0.02 * param.abs().mean() * torch.randn(param.shape, generator=gen))
    meta = _meta(cfg, net)
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 3 / np.sqrt(net.embed_dim), (1, net.embed_dim)).astype(np.float32)
    head = {"kind": "linear", "weight": weight, "bias": np.zeros(1, np.float32)}  # scores that vary face to face
    fs = FaceSet.load(faces)
    val = FaceDataset(fs, select_records(fs, "val"), size, meta["mean"], meta["std"])
    with torch.no_grad():
        emb = ImageEmbedder(net)(torch.stack([val[i][0] for i in range(len(val))])).numpy()
    scores = ex.head_fn({"head": head})(emb.astype(np.float64))
    ckpt = {"format": "dfscan-ckpt/1", **meta, "model": net.state_dict(), "head": head,
            "val_scores": scores, "val_labels": np.asarray(val.labels), "metrics": {"epoch": 1}, "loop": {"epoch": 1}}
    torch.save(ckpt, path)
    return ckpt

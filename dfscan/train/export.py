"""Checkpoint -> model bundle (embedder.onnx, classifier.onnx, manifest.json).

Threshold rule: the scan threshold is the `balanced` operating point, the equal-error-rate point of the
*calibrated* val frame scores. Calibration: one temperature T fit on val by log-loss, applied as
sigmoid(logit(p) / T). Operating points on the calibrated val scores: `balanced` (EER), `low-fpr`
(1 % false-positive rate), `high-recall` (95 % true-positive rate).
"""
from __future__ import annotations

import datetime as _dt
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dfscan.calibration import apply_calibration, fit_calibration
from dfscan.model.manifest import Manifest, Preprocess, ScanDefaults, write_bundle
from dfscan.outputs import staged_directory
from dfscan.train.loop import load_checkpoint
from dfscan.train.quantize import QUANTIZATIONS, quantize_embedder
from dfscan.train.recipes import ImageEmbedder, Net, RecipeConfig, build_net

PARITY_TOL = 1e-3
DFDC_LICENSE = ("Weights trained on DFDC (DeepFake Detection Challenge) data, which is licensed for "
                "research use only: these weights are for research use only.")


# ---------------------------------------------------------------- calibration and operating points

OPERATING_POINTS = ("balanced", "guarded", "low-fpr", "high-recall")


def operating_points(scores: np.ndarray, labels: np.ndarray, domains: Any = None) -> dict[str, float]:
    """balanced (EER), guarded (FPR <= 5%), low-fpr (FPR <= 1%) and high-recall (TPR >= 95%) thresholds
    on val scores.

    With `domains` (one per score), every domain counts alike, however many faces it has: balanced is the
    EER of the domain-averaged FPR and TPR, and low-fpr keeps the FPR of *every* domain with reals at or
    under 1% (guarded: 5%), so a threshold fitted mostly on one kind of footage cannot accuse the others."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    groups = np.asarray(domains if domains is not None else [""] * len(scores))
    grid = np.unique(np.concatenate([scores, [0.0, 1.0]]))
    fpr_by = [_exceed_rate(scores[(labels == 0) & (groups == g)], grid) for g in sorted(set(groups[labels == 0]))]
    tpr_by = [_exceed_rate(scores[(labels == 1) & (groups == g)], grid) for g in sorted(set(groups[labels == 1]))]
    fpr, tpr, worst_fpr = np.mean(fpr_by, 0), np.mean(tpr_by, 0), np.max(fpr_by, 0)
    eer_i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    low_i = int(np.flatnonzero(worst_fpr <= 0.01).min())
    guard_i = int(np.flatnonzero(worst_fpr <= 0.05).min())
    rec_i = int(np.flatnonzero(tpr >= 0.95).max())
    return dict(zip(OPERATING_POINTS, (float(grid[i]) for i in (eer_i, guard_i, low_i, rec_i))))


def _exceed_rate(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Share of `values` >= each threshold in `grid` (sorted ascending)."""
    values = np.sort(values)
    return 1.0 - np.searchsorted(values, grid, side="left") / max(1, len(values))


def val_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    from dfscan import metrics  # noqa: PLC0415 - the one metrics module: val EER here == eval's EER
    pred = scores >= threshold
    return {"val_auc": metrics.roc_auc(labels, scores),
            "val_eer": metrics.equal_error_rate(labels, scores)[0],
            "val_ap": metrics.average_precision(labels, scores),
            "val_logloss": metrics.log_loss(labels, scores),
            "val_brier": metrics.brier(labels, scores),
            "val_accuracy_at_threshold": float(np.mean(pred == labels.astype(bool))),
            "val_frames": int(len(labels))}


# ---------------------------------------------------------------- rebuilding the model

def rebuild_net(ckpt: dict[str, Any]) -> Net:
    known = set(RecipeConfig.__dataclass_fields__)
    cfg = RecipeConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
    cfg.augment = tuple(cfg.augment or ())
    net = build_net(cfg, pretrained=False)
    missing, unexpected = _state_mismatch(net.state_dict(), ckpt["model"])
    if missing or unexpected:  # torch's own message lists every key, over many lines
        raise ValueError(f"the checkpoint's weights do not fit its recipe's network ({cfg.recipe}, {cfg.backbone}): "
                         f"{len(missing)} missing (e.g. {(missing or ['-'])[0]}), {len(unexpected)} unexpected "
                         f"(e.g. {(unexpected or ['-'])[0]})")
    net.load_state_dict(ckpt["model"])
    net.start_stage = 0
    return net.eval()


def _state_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Keys a network needs that the weights lack (or hold in another shape), and keys it has no place for."""
    missing = [key for key, value in expected.items()
               if key not in given or tuple(getattr(given[key], "shape", ())) != tuple(value.shape)]
    return missing, [k for k in given if k not in expected]


def head_fn(ckpt: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    head = ckpt["head"]
    if head["kind"] == "linear":
        w, b = np.asarray(head["weight"], np.float64), np.asarray(head["bias"], np.float64)
        if w.shape[0] == 2:
            w, b = w[1:] - w[:1], b[1:] - b[:1]
        return lambda x: 1.0 / (1.0 + np.exp(-(x @ w.reshape(-1) + b[0])))
    from dfscan.train.heads import _fake_column
    est = pickle.loads(head["estimator"])
    return lambda x: est.predict_proba(x.astype(np.float32))[:, _fake_column(est)]


def export_embedder(net: Net, path: Path, size: int) -> None:
    model = ImageEmbedder(net).eval()
    dummy = torch.randn(2, 3, size, size)
    kwargs = dict(input_names=["images"], output_names=["embeddings"], opset_version=17,
                  dynamic_axes={"images": {0: "N"}, "embeddings": {0: "N"}})
    try:
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, **kwargs)
    except Exception:  # noqa: BLE001 - the TorchScript exporter may be gone: use the dynamo one
        torch.onnx.export(model, (dummy,), str(path), dynamo=True, input_names=["images"],
                          output_names=["embeddings"], dynamic_shapes=({0: torch.export.Dim("N", min=1)},),
                          opset_version=17, external_data=False)


def export_classifier(ckpt: dict[str, Any], path: Path, dim: int) -> None:
    from dfscan.train.heads import classifier_to_onnx, linear_head_to_onnx
    head = ckpt["head"]
    if head["kind"] == "linear":
        linear_head_to_onnx(head["weight"], head["bias"], path)
    else:
        classifier_to_onnx(pickle.loads(head["estimator"]), dim, path)


def parity_check(net: Net, ckpt: dict[str, Any], emb_path: Path, cls_path: Path, images: torch.Tensor
                 ) -> float:
    """Max |p_torch - p_onnxruntime| of the final fake probability; raises above PARITY_TOL."""
    import onnxruntime as ort
    with torch.no_grad():
        emb = ImageEmbedder(net)(images).numpy()
    p_torch = head_fn(ckpt)(emb.astype(np.float64))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    es = ort.InferenceSession(str(emb_path), opts, providers=["CPUExecutionProvider"])
    cs = ort.InferenceSession(str(cls_path), opts, providers=["CPUExecutionProvider"])
    e_ort = es.run(["embeddings"], {"images": images.numpy()})[0]
    p_ort = cs.run(["prob_fake"], {"embeddings": e_ort.astype(np.float32)})[0].reshape(-1)
    emb_diff = float(np.abs(e_ort - emb).max())
    diff = float(np.abs(p_ort - p_torch).max())
    print(f"parity: max |embedding diff| {emb_diff:.2e}, max |prob diff| {diff:.2e} over {len(images)} images")
    if not diff <= PARITY_TOL:
        raise RuntimeError(f"ONNX/torch parity check failed: max prob diff {diff:.2e} > {PARITY_TOL}")
    return diff


def _parity_images(ckpt: dict[str, Any], faces: Any = None, n: int = 16) -> torch.Tensor:
    """Real val crops when the training face set is reachable (`faces`, if already loaded), else random inputs."""
    size, mean, std = ckpt["input_size"], ckpt["mean"], ckpt["std"]
    try:
        from dfscan.train.data import FaceDataset
        fs = faces if faces is not None else training_faces(ckpt)
        ds = FaceDataset(fs, fs.split("val")[:n], size, mean, std)
        return torch.stack([ds[i][0] for i in range(len(ds))])
    except (OSError, ValueError, KeyError):  # face sets moved or gone: parity on random inputs still holds
        return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- the bundle

def export_bundle(ckpt_path: str | Path, out_dir: str | Path, name: str = "dfscan-default",
                  version: str | None = None, license_text: str | None = None,
                  extra_training: dict[str, Any] | None = None, frames: int = 32,
                  aggregation: str = "mean", default_point: str = "balanced",
                  quantize: str | None = None) -> Path:
    """With `quantize="int8"` the bundle holds an int8 embedder, and its calibration, operating points and
    likelihood ratios are fitted on that embedder's own val scores (the val faces scored again through it)."""
    ckpt = load_checkpoint(ckpt_path)
    if "ensemble" in ckpt and quantize:
        raise ValueError("--quantize is for single-model bundles, not ensembles")
    with staged_directory(out_dir) as staging:  # a failed export leaves an earlier bundle there as it was
        if "ensemble" in ckpt:
            export_ensemble(ckpt_path, ckpt, staging, name=name, version=version, license_text=license_text,
                            frames=frames, aggregation=aggregation, default_point=default_point)
        else:
            export_checkpoint(ckpt, staging, name=name, version=version, license_text=license_text,
                              extra_training=extra_training, frames=frames, aggregation=aggregation,
                              default_point=default_point, quantize=quantize, source=str(ckpt_path))
    return Path(out_dir)


def export_checkpoint(ckpt: dict[str, Any], out_dir: str | Path, name: str = "dfscan-default",
                      version: str | None = None, license_text: str | None = None,
                      extra_training: dict[str, Any] | None = None, frames: int = 32,
                      aggregation: str = "mean", default_point: str = "balanced",
                      quantize: str | None = None, source: str = "the checkpoint") -> Path:
    """`export_bundle` of a single-model checkpoint already in memory (`source` names it in errors)."""
    if "head" not in ckpt:
        raise ValueError(f"{source} has no classifier head: was training interrupted? "
                         "(export the best.pt a finished run writes)")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if ckpt.get("val_scores") is None or ckpt.get("val_labels") is None:
        raise ValueError(f"{source} has no val scores to calibrate and set thresholds on")
    net = rebuild_net(ckpt)
    size, dim = int(ckpt["input_size"]), int(ckpt["embed"]["dim"])
    scores = np.asarray(ckpt.get("val_scores"), np.float64)
    labels = np.asarray(ckpt.get("val_labels"), np.int64)
    if scores.ndim != 1 or len(scores) != len(labels) or len(np.unique(labels)) < 2:
        raise ValueError(f"{source} has no usable val scores to calibrate and set thresholds on")
    settings = dict(name=name, version=version, license_text=license_text, frames=frames, aggregation=aggregation,
                    default_point=default_point, extra_training=dict(extra_training or {}))
    if "soup" in ckpt:  # provenance: a weight average of these runs, not the first member's run alone
        settings["extra_training"]["soup"] = ckpt["soup"]
    with tempfile.TemporaryDirectory() as tmp:
        emb_path, cls_path = Path(tmp) / "embedder.onnx", Path(tmp) / "classifier.onnx"
        export_embedder(net, emb_path, size)
        export_classifier(ckpt, cls_path, dim)
        faces = training_faces(ckpt) if quantize else None  # int8 needs them: calibration and val again
        diff = parity_check(net, ckpt, emb_path, cls_path, _parity_images(ckpt, faces))
        manifest = bundle_manifest(ckpt, scores, labels, diff=diff, **settings)
        if quantize:
            int8_path = Path(tmp) / "embedder_int8.onnx"
            record = quantize_embedder(emb_path, int8_path, faces, size, ckpt["mean"], ckpt["std"],
                                       seed=int(ckpt["config"].get("seed", 0)))
            provisional = write_bundle(Path(tmp) / "int8", int8_path, cls_path, manifest)
            int8_scores = rescore_val(provisional, ckpt, faces, labels)
            settings["extra_training"]["quantization"] = {**record, "float_val_auc": float(_auc(labels, scores))}
            manifest = bundle_manifest(ckpt, int8_scores, labels, diff=diff, **settings)
            print(f"int8 embedder: val AUC {_auc(labels, scores):.4f} (float) -> {_auc(labels, int8_scores):.4f}, "
                  f"max |raw score change| {np.abs(int8_scores - scores).max():.3f} over {len(labels)} val faces")
            emb_path = int8_path
        return write_bundle(out_dir, emb_path, cls_path, manifest)


def bundle_manifest(ckpt: dict[str, Any], scores: np.ndarray, labels: np.ndarray, *, diff: float, name: str,
                    version: str | None, license_text: str | None, frames: int, aggregation: str,
                    default_point: str, extra_training: dict[str, Any]) -> Manifest:
    """The manifest of a single-model bundle whose raw val frame scores are `scores`: calibration, operating
    points and LR calibration are all fitted on them."""
    size, dim = int(ckpt["input_size"]), int(ckpt["embed"]["dim"])
    calibration = fit_calibration("temperature", scores, labels)
    calibrated = apply_calibration(scores, calibration)
    domains = ckpt.get("val_domains")
    ops = operating_points(calibrated, labels, domains)
    if default_point not in ops:
        raise ValueError(f"default operating point {default_point!r} is not one of {', '.join(ops)}")
    cfg = ckpt["config"]
    return Manifest(
        name=name, version=version or _dt.date.today().isoformat(),
        preprocess=Preprocess(input_size=size, crop_margin=float(ckpt["crop_margin"]),
                              mean=[float(v) for v in ckpt["mean"]], std=[float(v) for v in ckpt["std"]]),
        embedding_dim=dim, files={},
        scan=ScanDefaults(frames=frames, aggregation=aggregation, threshold=ops[default_point],
                          operating_point=default_point),
        calibration=calibration,
        operating_points=ops,
        likelihood_ratio=_fit_likelihood_ratio(calibrated, labels, cfg.get("dataset"), domains),
        training={"recipe": ckpt["recipe"], "backbone": ckpt["backbone"], "input_size": size,
                  "data": cfg.get("dataset"), "train_images": ckpt.get("metrics", {}).get("train_images"),
                  "epochs_run": ckpt.get("loop", {}).get("epoch"),
                  "best_epoch": ckpt.get("metrics", {}).get("epoch"),
                  "config": {k: v for k, v in cfg.items() if k not in ("dataset", "cache_dir", "progress")},
                  "crop_geometry": ckpt.get("geometry", {}),
                  "threshold_rule": (f"operating point {default_point!r} of calibrated val frame scores "
                                     "(balanced: EER; guarded: FPR <= 5%; low-fpr: FPR <= 1%; high-recall: TPR >= 95%)"
                                     + (f", every domain weighted alike ({', '.join(sorted(set(domains)))}); "
                                        "FPR bounds hold in each domain" if domains is not None else "")),
                  **extra_training},
        metrics={**val_metrics(calibrated, labels, ops[default_point]),
                 "val_auc_raw": float(_auc(labels, scores)), "onnx_parity_max_abs_diff": diff},
        license=license_text or f"{DFDC_LICENSE} Pretrained backbone: {ckpt.get('backbone_license', '')}.",
    )


def training_faces(ckpt: dict[str, Any]) -> Any:
    """The face set(s) the checkpoint trained on, as training saw them (one union, domains per face set)."""
    from dfscan.faceset import FaceSet
    dataset = ckpt["config"].get("dataset")
    try:
        return FaceSet.union([d.strip() for d in str(dataset).split(",") if d.strip()])
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"--quantize needs the checkpoint's training face sets ({dataset}) to calibrate on "
                         f"and to score val again: {exc}") from None


def rescore_val(bundle: Path, ckpt: dict[str, Any], face_set: Any, labels: np.ndarray) -> np.ndarray:
    """Raw scores of the checkpoint's val faces (the same records of its training face sets, in the order
    training scored them) through a written bundle, as a scan scores crops."""
    from dfscan.faceset import crop_batches
    from dfscan.model.scorer import Scorer
    from dfscan.train.data import select_records
    cfg = ckpt["config"]
    records = select_records(face_set, "val", cfg.get("val_limit"), int(cfg.get("seed", 0)))
    if [r.is_fake for r in records] != labels.tolist():
        raise ValueError("the training face sets' val split no longer matches the checkpoint's val labels "
                         "(were the face sets changed since training?)")
    scorer = Scorer(bundle, device="cpu")
    return np.concatenate([scorer.raw_scores(crops) for crops in crop_batches(face_set, records, scorer.input_size)])


def _fit_likelihood_ratio(calibrated: np.ndarray, labels: np.ndarray, data: Any, domains: Any = None
                          ) -> dict[str, Any] | None:
    """The score -> LR calibration on the same val frame scores (None, with a warning, without lir)."""
    from dfscan.likelihood import fit_lr_calibration  # noqa: PLC0415
    sets = [Path(part.split(":", 1)[-1]).name for part in str(data).split(",")] if data else ["(unknown)"]
    population = f"val split of the training face set(s) {', '.join(sets)}"
    if domains is not None:
        population += f" (domains: {', '.join(sorted({str(d) for d in domains}))})"
    try:
        return fit_lr_calibration(calibrated, labels, population, level="frame")
    except RuntimeError as exc:
        print(f"warning: no likelihood-ratio calibration in the bundle: {exc}")
        return None


def export_ensemble(ckpt_path: str | Path, ckpt: dict[str, Any], out_dir: str | Path, name: str,
                    version: str | None, license_text: str | None, frames: int, aggregation: str,
                    default_point: str = "balanced") -> Path:
    """An ensemble checkpoint (`train --bags K`) -> one bundle: each member exported (and calibrated) as
    a bundle in `member_<i>/`, listed and hashed in the ensemble's manifest with its threshold; the
    ensemble's thresholds come from the combined val scores of the members."""
    import json

    from dfscan.model.manifest import MANIFEST_NAME, load_manifest, sha256_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ensemble = ckpt["ensemble"]
    run_dir = Path(ckpt_path).parent
    members, files, member_scores, labels, domains = [], {}, [], None, None
    for i, rel in enumerate(ensemble["members"]):
        member_ckpt = load_checkpoint(run_dir / rel)
        bundle = export_bundle(run_dir / rel, out_dir / f"member_{i}", name=f"{name}-member{i}", version=version,
                               license_text=license_text, frames=frames, aggregation=aggregation)
        manifest = load_manifest(bundle)
        y = np.asarray(member_ckpt["val_labels"], np.int64)
        if labels is not None and not np.array_equal(labels, y):
            raise ValueError(f"ensemble member {rel} was validated on other faces than member 0")
        labels, domains = y, member_ckpt.get("val_domains")
        member_scores.append(apply_calibration(member_ckpt["val_scores"], manifest.calibration))
        members.append({"path": f"member_{i}", "threshold": manifest.scan.threshold,
                        "val_auc": manifest.metrics["val_auc"], "train_images": manifest.training["train_images"]})
        files[f"member_{i}"] = {"path": f"member_{i}/{MANIFEST_NAME}", "sha256": sha256_file(bundle / MANIFEST_NAME)}
    scores = np.stack(member_scores)
    if ensemble["combination"] == "vote":
        thresholds = np.asarray([m["threshold"] for m in members])[:, None]
        combined = np.mean(scores >= thresholds, axis=0)
    else:
        combined = np.mean(scores, axis=0)
    # vote fractions reach 1.0 exactly; just below it, every operating point has a reachable threshold
    ops = operating_points(np.minimum(combined, 1 - 1e-9), labels, domains)
    if ensemble["combination"] == "vote":
        ops["balanced"] = 0.5  # a majority of the members: the paper's maximum voting
    if default_point not in ops:
        raise ValueError(f"default operating point {default_point!r} is not one of {', '.join(ops)}")
    first = load_manifest(out_dir / "member_0")
    cfg = ckpt["config"]
    manifest = Manifest(
        name=name, version=version or _dt.date.today().isoformat(), preprocess=first.preprocess,
        embedding_dim=first.embedding_dim, files=files,
        scan=ScanDefaults(frames=frames, aggregation=aggregation, threshold=ops[default_point],
                          operating_point=default_point),
        calibration=None, operating_points=ops,
        training={"recipe": ckpt["recipe"], "backbone": first.training.get("backbone"),
                  "input_size": first.preprocess.input_size, "data": cfg.get("dataset"),
                  "bagging": {"bags": ensemble["bags"], "combination": ensemble["combination"],
                              "subsets": "larger class split into disjoint parts, each with a balanced "
                                         "share of the smaller class (Kumar & Bhavsar)"},
                  "config": {k: v for k, v in cfg.items() if k not in ("dataset", "cache_dir", "progress")},
                  "threshold_rule": ("majority of members, each at its own balanced threshold"
                                     if ensemble["combination"] == "vote" else
                                     "EER point of the mean of the members' calibrated val scores")},
        metrics={**val_metrics(combined, labels, ops[default_point]),
                 "members": [{"val_auc": m["val_auc"]} for m in members]},
        license=first.license, ensemble={"combination": ensemble["combination"], "members": members},
    )
    manifest.validate()
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return out_dir


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from dfscan.metrics import roc_auc  # noqa: PLC0415
    return roc_auc(labels, scores)

"""Post-training int8 quantisation of an exported embedder: onnxruntime static QDQ, int8 weights per output
channel, uint8 activations whose ranges are measured on real training crops of the checkpoint's face sets.

EfficientNet-Lite was designed for int8 (ReLU6, no squeeze-excite), so its convolutions map straight onto
VNNI/AMX int8 kernels. A quantised embedder scores a little differently from the float one, so the export
refits the bundle's calibration, operating points and likelihood ratios on the int8 model's own val scores
(`export_bundle(..., quantize="int8")`); nothing fitted on the float model is carried over.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dfscan.faceset import FaceRecord, FaceSet, crop_batches
from dfscan.model.scorer import to_network_input

QUANTIZATIONS = ("int8",)
CALIBRATION_FACES = 512
CALIBRATION_BATCH = 32


def calibration_records(face_set: FaceSet, n: int = CALIBRATION_FACES, seed: int = 0) -> list[FaceRecord]:
    """A seeded sample of training faces, the same number from each (domain, label) group present."""
    records = face_set.split("train") or face_set.split("val")
    groups: dict[tuple[str, str], list[FaceRecord]] = {}
    for record in records:
        groups.setdefault((record.domain or record.origin, record.label), []).append(record)
    rng = np.random.default_rng(seed)
    per_group = max(1, n // max(1, len(groups)))
    chosen: list[FaceRecord] = []
    for key in sorted(groups):
        members = groups[key]
        picks = rng.choice(len(members), size=min(per_group, len(members)), replace=False)
        chosen += [members[i] for i in sorted(picks)]
    return chosen


class _CropReader:
    """onnxruntime's CalibrationDataReader protocol over normalised crops."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]):
        self.input_name, self._batches = input_name, batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:  # part of the protocol; one pass is all static MinMax calibration needs
        pass


def quantize_embedder(float_onnx: Path, out_onnx: Path, face_set: FaceSet, size: int,
                      mean: Sequence[float], std: Sequence[float], faces: int = CALIBRATION_FACES,
                      seed: int = 0) -> dict[str, object]:
    """Write an int8 copy of `float_onnx` calibrated on `faces` training crops; returns what the manifest
    records about it."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # the quantisation tools ship with onnxruntime but need `onnx`
        raise RuntimeError(f"int8 export needs onnxruntime's quantisation tools and onnx: {exc}") from None
    records = calibration_records(face_set, faces, seed)
    if not records:
        raise ValueError(f"face set {face_set.root} has no faces to calibrate the int8 ranges on")
    input_name = ort.InferenceSession(str(float_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    batches = (to_network_input(crops, mean, std)
               for crops in crop_batches(face_set, records, size, CALIBRATION_BATCH))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_onnx), _CropReader(input_name, batches),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"precision": "int8", "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
            "activation_ranges": "MinMax", "calibration_faces": len(records),
            "calibration_data": "train split of the training face set(s), equal per (domain, label)"}

#!/usr/bin/env python
"""Convert @vladmandic/face-api's face-recognition model (dlib's 128-D ResNet, TF.js) to a torch state dict.

    python tools/convert_face_api.py                       # npm pack @vladmandic/face-api@1.7.15
    python tools/convert_face_api.py --tarball face-api.tgz --out weights.pt
    python tools/convert_face_api.py --check-node   # also run face-api itself (tfjs CPU) and compare

Reads model/face_recognition_model-weights_manifest.json and its shards from the package tarball,
dequantizes (uint8/uint16: q * scale + min; float16), folds each conv + bias + per-channel scale into a
biased conv, checks the result loads strictly into `dfscan.train.dlib_resnet.DlibResNet`, and writes it.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dfscan.train.dlib_resnet import (  # noqa: E402
    DLIB_MEAN, DLIB_STD, DlibResNet, build_dlib_resnet, default_weights_path,
)

PACKAGE = "@vladmandic/face-api"
VERSION = "1.7.15"
MODEL = "face_recognition_model"

TFJS_VERSION = "4.22.0"  # face-api 1.7.15 is built against tfjs ^4.22.0
# Runs face-api's own FaceRecognitionNet on the tfjs pure-JS CPU backend (no native binding).
# face-api.node-wasm.js is the node build that takes tfjs from @tensorflow/tfjs instead of tfjs-node.
_NODE_SCRIPT = r"""
const fs = require('fs');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
(async () => {
  const [inPath, n, outPath] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const manifest = require.resolve('@vladmandic/face-api/model/face_recognition_model-weights_manifest.json');
  await faceapi.nets.faceRecognitionNet.loadFromDisk(require('path').dirname(manifest));
  const buf = fs.readFileSync(inPath);
  const pixels = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const x = tf.tensor4d(pixels, [Number(n), 150, 150, 3]);
  const out = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(tf.unstack(x));
  const flat = new Float32Array(out.length * 128);
  out.forEach((d, i) => flat.set(d, i * 128));
  fs.writeFileSync(outPath, Buffer.from(flat.buffer));
  console.log(`face-api ${faceapi.version}, tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}`);
})().catch((e) => { console.error(e); process.exit(1); });
"""

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
           "float16": np.float16, "bool": np.uint8}


def npm_pack(spec: str, dest: Path) -> Path:
    out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", str(dest)],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return dest / out[-1]


def read_tarball(tarball: Path) -> tuple[str, list[dict], bytes]:
    """(package version, weight specs, concatenated shard bytes) of the face-recognition model."""
    with tarfile.open(tarball) as tar:
        def member(name: str) -> bytes:
            f = tar.extractfile(f"package/{name}")
            if f is None:
                raise FileNotFoundError(f"{name} not in {tarball}")
            return f.read()

        version = json.loads(member("package.json"))["version"]
        manifest = json.loads(member(f"model/{MODEL}-weights_manifest.json"))
        specs, data = [], b""
        for group in manifest:  # shards of a group are one buffer cut into files
            specs.extend(group["weights"])
            data += b"".join(member(f"model/{p}") for p in group["paths"])
    return version, specs, data


def decode_weights(specs: list[dict], data: bytes) -> dict[str, np.ndarray]:
    """tfjs decodeWeights: walk the buffer in manifest order, dequantizing where asked."""
    out, offset = {}, 0
    for spec in specs:
        shape, quant = spec["shape"], spec.get("quantization")
        count = int(np.prod(shape)) if shape else 1
        stored = np.dtype(_DTYPES[quant["dtype"] if quant else spec["dtype"]])
        raw = np.frombuffer(data, stored, count, offset)
        offset += count * stored.itemsize
        if quant and quant["dtype"] in ("uint8", "uint16"):
            # tfjs computes in float64 (JS numbers) and stores float32; do the same
            values = raw.astype(np.float64) * quant["scale"] + quant["min"]
        else:
            values = raw
        out[spec["name"]] = values.astype(np.float32).reshape(shape)
    if offset != len(data):
        raise ValueError(f"manifest covers {offset} bytes, shards hold {len(data)}")
    return out


def fold_conv(w: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """(conv(x) + b) * s + t  ==  conv'(x) + b' with conv' = conv * s, b' = b * s + t."""
    filters = w[f"{prefix}/conv/filters"].astype(np.float64)        # [kh, kw, cin, cout]
    bias = w[f"{prefix}/conv/bias"].astype(np.float64)
    scale = w[f"{prefix}/scale/weights"].astype(np.float64)
    shift = w[f"{prefix}/scale/biases"].astype(np.float64)
    weight = (filters * scale).transpose(3, 2, 0, 1)                  # -> [cout, cin, kh, kw]
    name = prefix.replace("/", ".")
    return {f"{name}.weight": torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)),
            f"{name}.bias": torch.from_numpy((bias * scale + shift).astype(np.float32))}


def to_state_dict(w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    prefixes = sorted({k.rsplit("/", 2)[0] for k in w if k.endswith("/conv/filters")})
    state: dict[str, torch.Tensor] = {}
    for prefix in prefixes:
        state.update(fold_conv(w, prefix))
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(w["fc"].T))  # [256,128] -> [128,256]
    used = {f"{p}/{s}" for p in prefixes for s in ("conv/filters", "conv/bias", "scale/weights",
                                                     "scale/biases")} | {"fc"}
    if set(w) - used:
        raise ValueError(f"unused tfjs weights: {sorted(set(w) - used)}")
    return state


def convert(tarball: Path, out: Path) -> tuple[str, str]:
    """Write the state dict to `out`; returns (package version, sha256 of `out`)."""
    version, specs, data = read_tarball(tarball)
    state = to_state_dict(decode_weights(specs, data))
    DlibResNet().load_state_dict(state, strict=True)  # names and shapes match the torch network
    # saved via a buffer: torch names the zip records after the file, and the hash should not depend on it
    buffer = io.BytesIO()
    torch.save(state, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    return version, hashlib.sha256(buffer.getvalue()).hexdigest()


def check_inputs() -> np.ndarray:
    """Four NHWC float32 images in [0, 255]: a smooth pattern, its mirror image, two of uniform noise."""
    h, w, c = np.meshgrid(np.arange(150), np.arange(150), np.arange(3), indexing="ij")
    pattern = (127.5 + 127.5 * np.sin(0.05 * h * (c + 1) + 0.07 * w)).astype(np.float32)
    noise = np.random.default_rng(0).uniform(0, 255, (2, 150, 150, 3)).astype(np.float32)
    return np.concatenate([pattern[None], pattern[None, :, ::-1], noise])


def torch_descriptors(weights: Path, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2) / 255
    x = (x - torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)) / torch.tensor(DLIB_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return build_dlib_resnet(weights_path=weights).eval()(x).numpy()


def check_node(tarball: Path, weights: Path, workdir: Path) -> float:
    """Max abs difference between face-api's descriptors (node, tfjs CPU) and ours on `check_inputs()`."""
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(workdir),
                    f"@tensorflow/tfjs@{TFJS_VERSION}", f"@tensorflow/tfjs-backend-wasm@{TFJS_VERSION}",
                    str(tarball.resolve())], check=True)
    images = check_inputs()
    images.astype("<f4").tofile(workdir / "inputs.f32")
    (workdir / "run.js").write_text(_NODE_SCRIPT)
    run = subprocess.run(["node", "run.js", "inputs.f32", str(len(images)), "outputs.f32"], cwd=workdir,
                         check=True, capture_output=True, text=True)
    print(run.stdout.strip().splitlines()[-1])
    expected = np.fromfile(workdir / "outputs.f32", "<f4").reshape(len(images), -1)
    return float(np.abs(torch_descriptors(weights, images) - expected).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tarball", type=Path, help=f"a local {PACKAGE} .tgz (default: npm pack it)")
    ap.add_argument("--version", default=VERSION, help="package version to npm pack")
    ap.add_argument("--out", type=Path, default=default_weights_path(), help="output .pt")
    ap.add_argument("--check-node", action="store_true",
                    help=f"npm install @tensorflow/tfjs@{TFJS_VERSION}, run face-api in node and compare")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or npm_pack(f"{PACKAGE}@{args.version}", Path(tmp))
        version, digest = convert(tarball, args.out)
        print(f"source: {PACKAGE}@{version} {MODEL} (package: MIT, Vladimir Mandic; weights: dlib's "
              "dlib_face_recognition_resnet_model_v1 by Davis King, public domain per davisking/dlib-models)")
        print(f"wrote: {args.out} ({args.out.stat().st_size} bytes)")
        print(f"sha256: {digest}")
        if args.check_node:
            workdir = Path(tmp) / "node"
            workdir.mkdir()
            diff = check_node(tarball, args.out, workdir)
            print(f"max |face-api - torch| over 4 images x 128: {diff:.3g}")
            if diff >= 1e-3:
                print("parity check FAILED (target < 1e-3)", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

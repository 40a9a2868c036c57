#!/usr/bin/env bash
# The CUDA path, end to end, as one script for a machine with an NVIDIA GPU (run from the repo root):
#   1. install dfscan[gpu,train,ray,test] into a fresh venv (onnxruntime-gpu with its CUDA/cuDNN wheels)
#   2. `dfscan check --device cuda --json`: the provider must be CUDAExecutionProvider
#   3. scan a directory of clips on CUDA (local engine) and report videos/s; bench/scan_speed.py on CUDA
#   4. the same directory with --engine ray --gpus-per-actor: rows must equal the local CUDA scan
#   5. a short training on CUDA (bce, 512 faces, 1 epoch), and torchrun DDP (nccl) when there are 2+ GPUs
# Figures and logs go to $OUT (default ./gpu_check_out); the summary is $OUT/summary.json.
#
#   bash bench/gpu_check.sh                       # installs from PyPI
#   WHEELHOUSE=/wheels bash bench/gpu_check.sh    # offline: pip install --no-index --find-links /wheels
#   VENV=/opt/venv SKIP_INSTALL=1 bash bench/gpu_check.sh   # use an environment that already has dfscan[gpu]
#
# Inputs: CLIPS (default ../shared/clips/real, else the bundled example clip copied 8 times),
# FACES (default ../shared/datasets/dfdc_faces; the training steps are skipped without it), COPIES (clip
# copies to scan, default 24).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$PWD/gpu_check_out}
VENV=${VENV:-$REPO/.venv-gpu}
CLIPS=${CLIPS:-$REPO/../shared/clips/real}
FACES=${FACES:-$REPO/../shared/datasets/dfdc_faces}
COPIES=${COPIES:-24}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
GPUS=$(nvidia-smi -L | wc -l)

if [[ -z "${SKIP_INSTALL:-}" ]]; then
  step "install dfscan[gpu,train,ray,test] into $VENV"
  python3 -m venv "$VENV"
  PIP=("$VENV/bin/pip" install -q)
  [[ -n "${WHEELHOUSE:-}" ]] && PIP+=(--no-index --find-links "$WHEELHOUSE")
  "${PIP[@]}" -e "$REPO[gpu,train,ray,test]"
fi
PY="$VENV/bin/python"
DFSCAN=("$PY" -m dfscan)
"${DFSCAN[@]}" version | tee "$OUT/version.txt"

step "check --device cuda"
"${DFSCAN[@]}" check --example --device cuda --json > "$OUT/check_cuda.json" || true   # exit 1 = FAKE is fine
PROVIDER=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['provider'])" "$OUT/check_cuda.json")
echo "provider: $PROVIDER"
[[ "$PROVIDER" == "CUDAExecutionProvider" ]] || { echo "FAIL: check did not run on CUDA"; exit 1; }

step "scan $COPIES clips on CUDA"
SCAN_DIR=$(mktemp -d)
trap 'rm -rf "$SCAN_DIR"' EXIT
mapfile -t SOURCES < <(ls "$CLIPS"/*.mp4 2>/dev/null || "$PY" -c "from dfscan.assets import EXAMPLE_CLIP; print(EXAMPLE_CLIP)")
for ((i = 0; i < COPIES; i++)); do cp "${SOURCES[i % ${#SOURCES[@]}]}" "$SCAN_DIR/$(printf %03d $i)_$(basename "${SOURCES[i % ${#SOURCES[@]}]}")"; done
# seconds CMD...: runs CMD (its output to the log), prints the wall seconds; exit 1 (FAKE) and 3 (some ERROR rows) pass
seconds() { local t0 rc=0; t0=$(date +%s.%N); "$@" >&2 || rc=$?; ((rc <= 3)) || exit "$rc"; awk "BEGIN{print $(date +%s.%N) - $t0}"; }
LOCAL_S=$(seconds "${DFSCAN[@]}" scan "$SCAN_DIR" --device cuda --csv "$OUT/scan_cuda.csv" --overwrite --quiet)
echo "local engine, CUDA: $COPIES videos in $LOCAL_S s"
"$PY" bench/scan_speed.py --device cuda --json "$OUT/scan_speed_cuda.json" | tee "$OUT/scan_speed_cuda.txt"

step "scan on Ray, --gpus-per-actor 0.5 (2 actors per GPU)"
ACTORS=$((2 * GPUS))
RAY_S=$(seconds "${DFSCAN[@]}" scan "$SCAN_DIR" --engine ray --actors "$ACTORS" --gpus-per-actor 0.5 \
        --csv "$OUT/scan_ray_cuda.csv" --overwrite --quiet)
echo "ray engine, $ACTORS actors: $COPIES videos in $RAY_S s"
"$PY" - "$OUT/scan_cuda.csv" "$OUT/scan_ray_cuda.csv" <<'EOF'
import csv, sys
rows = [{r["path"]: (r["label"], r["score"], r["n_faces"], r["provider"]) for r in csv.DictReader(open(p))} for p in sys.argv[1:]]
assert rows[0] == rows[1], "ray rows differ from local rows"
assert {v[3] for v in rows[1].values()} == {"CUDAExecutionProvider"}, "ray actors did not run on CUDA"
print(f"ray rows == local rows ({len(rows[0])} videos), all on CUDAExecutionProvider")
EOF

TRAIN_S=null
DDP_S=null
if [[ -f "$FACES/labels.csv" ]]; then
  step "train bce on CUDA: 512 faces, 1 epoch"
  TRAIN_S=$(seconds "${DFSCAN[@]}" train bce --dataset "faces:$FACES" --limit 512 --val-limit 256 --epochs 1 \
            --device cuda --out "$OUT/train_cuda")
  tail -1 "$OUT/train_cuda/log.jsonl"
  if ((GPUS >= 2)); then
    step "torchrun DDP on $GPUS GPUs (nccl)"
    DDP_S=$(seconds "$PY" -m torch.distributed.run --standalone --nproc-per-node "$GPUS" -m dfscan train bce \
            --dataset "faces:$FACES" --limit 1024 --val-limit 256 --epochs 1 --device cuda --out "$OUT/train_ddp")
    tail -1 "$OUT/train_ddp/log.jsonl"
  fi
else
  echo "no face set at $FACES: training skipped"
fi

"$PY" - "$OUT" "$COPIES" "$LOCAL_S" "$RAY_S" "$ACTORS" "$TRAIN_S" "$DDP_S" <<'EOF'
import json, pathlib, sys
out, copies, local_s, ray_s, actors, train_s, ddp_s = sys.argv[1:]
out = pathlib.Path(out)
summary = {
    "gpu": (out / "gpu.txt").read_text().strip(),
    "check_provider": json.load(open(out / "check_cuda.json"))["provider"],
    "scan_local_cuda_videos_per_s": round(int(copies) / float(local_s), 3),
    "scan_ray_cuda_videos_per_s": round(int(copies) / float(ray_s), 3), "ray_actors": int(actors),
    "scan_speed_cuda": json.load(open(out / "scan_speed_cuda.json")),
    "train_cuda_s": None if train_s == "null" else float(train_s),
    "train_ddp_s": None if ddp_s == "null" else float(ddp_s),
}
log = out / "train_cuda" / "log.jsonl"
if log.is_file():
    summary["train_cuda_images_per_s"] = json.loads(log.read_text().splitlines()[-1])["images_per_s"]
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF

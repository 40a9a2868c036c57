"""onnxruntime (and OpenVINO for the face detector on CPU): import with a clear error, pick execution
providers, open sessions.

`device="auto"` takes CUDA only when onnxruntime-gpu is installed *and* a CUDA session actually opens;
otherwise CPU, without letting ORT print its library-load errors (it logs them at error level when the
CUDA libraries are missing, then silently falls back).

On CPU the MTCNN networks run on OpenVINO where it is installed (`dfscan[cpu]` installs it) for frames large
enough to pay for its start (dfscan.faces.mtcnn): the same outputs to ~2e-6, 2-2.5x faster (onnxruntime runs
their PReLU activations unfused, a pass over memory each, which is half of PNet's time).
DFSCAN_CPU_RUNTIME=onnxruntime keeps them on onnxruntime; =openvino makes a failing OpenVINO a setup error.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from dfscan.errors import ModelError, RuntimeMissingError, UsageError

DEVICES = ("auto", "cpu", "cuda")
MAX_PARALLEL_RUNS = 16  # each run in flight holds its own activations (~10-20 MB for the 224 px embedder)
Item = TypeVar("Item")
Output = TypeVar("Output")
CPU_RUNTIME_VARIABLE = "DFSCAN_CPU_RUNTIME"
CPU_RUNTIMES = ("auto", "openvino", "onnxruntime")
# OpenVINO keeps a prepared kernel set per input shape it has seen (PNet's pyramid levels, the last short run
# of crops), ~0.6 MB each and 5,000 by default: a batch over videos of many resolutions grew by hundreds of MB.
# 64 bounds it (measured: 2,000 shapes in one process, 867 MB unbounded, 192 MB at 16) and holds every shape
# of a video's detection.
OPENVINO_SHAPE_CACHE = 64
INSTALL_HINT = (
    "onnxruntime is not installed: install exactly one of  pip install 'dfscan[cpu]'  "
    "(onnxruntime) or  pip install 'dfscan[gpu]'  (onnxruntime-gpu)"
)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, as in a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_runs(device: str, threads: int | None) -> tuple[int | None, int]:
    """(onnxruntime threads for each session, runs at a time) for networks run many times on small inputs:
    MTCNN's pyramid parts and crops, the embedder's faces. On CPU the cores take different runs, one
    onnxruntime thread each; on this project's 2-core machine that is faster than two onnxruntime threads on
    every run by 33% for RNet, 20% PNet, 12% ONet and 30% for the 224 px embedder. A GPU parallelises each run."""
    if providers_for(device) == ["CPUExecutionProvider"]:
        return 1, max(1, min(threads or usable_cores(), MAX_PARALLEL_RUNS))
    return threads, 1


def scan_threads(device: str, threads: int | None) -> int | None:
    """The threads a video scan gives its networks: the caller's number, else on CPU every core but one. A scan
    keeps a core busy besides its networks' runs (the decoder's thread, detection's and scoring's Python), and
    a run thread per core on top of that only queues behind them: on 2 cores one run thread instead of two took
    a talking head's check from 0.85 to 0.82 s wall, 128 frames of it from 2.02 to 1.79 s, 96 frames of the
    1080p crowd from 5.79 to 5.55 s, each with less CPU. On a GPU, onnxruntime's own default (None)."""
    if threads is not None or providers_for(device) != ["CPUExecutionProvider"]:
        return threads
    return max(1, usable_cores() - 1)


@functools.lru_cache(maxsize=None)
def _run_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="dfscan-run")


def map_runs(run: Callable[[Item], Output], items: Sequence[Item], workers: int) -> list[Output]:
    """`run` over `items` on `workers` threads (onnxruntime releases the GIL while it runs), in order. The
    pool is shared: `run` must not itself call map_runs."""
    if workers <= 1 or len(items) <= 1:
        return [run(item) for item in items]
    return list(_run_pool(workers).map(run, items))


def gpu_runtime_installed() -> bool:
    """onnxruntime-gpu is the onnxruntime installed (its CUDA provider library lies beside the module): known
    without importing onnxruntime, ~45 ms that a scan spends decoding instead."""
    spec = importlib.util.find_spec("onnxruntime")
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    return any(any(Path(folder, "capi").glob("*providers_cuda*")) for folder in folders)


def import_ort() -> Any:
    try:
        import onnxruntime as ort  # noqa: PLC0415 - optional dependency, imported on demand
    except ImportError:
        raise RuntimeMissingError(INSTALL_HINT) from None
    if not hasattr(ort, "InferenceSession"):
        # Both onnxruntime and onnxruntime-gpu installed, then one uninstalled: the folder is half gone.
        raise RuntimeMissingError(
            "onnxruntime is broken (onnxruntime and onnxruntime-gpu clobbered each other): "
            "pip uninstall -y onnxruntime onnxruntime-gpu, then install one of them again"
        )
    return ort


def _session_options(ort: Any, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only from our own sessions; provider probing is quieter still
    if threads:
        options.intra_op_num_threads = threads
    # Idle ORT threads busy-wait by default; on a small shared CPU (2 cores, parallel scan workers)
    # that spinning steals the cores the other threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's CPU arena: every session here runs inputs of bounded size (MTCNN's runs of at most
    # PNET_PIXELS_PER_RUN pixels or CROP_BATCH crops, the embedder one face at a time on CPU), so the arena
    # stops growing after the first frames and hands the same pages out again run after run. Without it
    # every run's activations are fresh pages from the C library: ~20,000 page faults for 32 frames of a
    # talking head, which cost more than the small networks themselves on a VM.
    options.enable_cpu_mem_arena = True
    return options


@functools.lru_cache(maxsize=None)
def cuda_works() -> bool:
    """True when onnxruntime-gpu can really open a CUDA session here (libraries present, a GPU visible)."""
    ort = import_ort()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    model_bytes = _tiny_identity_model()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed CUDA probe must not spray errors on the user
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CUDAExecutionProvider"])
    except Exception:  # noqa: BLE001 - any failure means "no usable CUDA"
        return False
    return "CUDAExecutionProvider" in session.get_providers()


def _tiny_identity_model() -> bytes:
    """A serialized one-node ONNX model (Identity), written by hand so the probe needs no `onnx` package."""
    from dfscan.assets import IDENTITY_ONNX  # noqa: PLC0415

    return IDENTITY_ONNX.read_bytes()


def providers_for(device: str) -> list[str]:
    if device not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    ort = import_ort()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeMissingError(
                "--device cuda needs onnxruntime-gpu: pip uninstall -y onnxruntime && pip install 'dfscan[gpu]'"
            )
        if not cuda_works():
            raise RuntimeMissingError(
                "--device cuda: onnxruntime-gpu is installed but no CUDA session opens "
                "(no GPU visible, or CUDA/cuDNN libraries missing)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_works() else ["CPUExecutionProvider"]


def cpu_runtime(loaded: bool = False) -> str:
    """What `create_session(..., openvino=True)` uses on CPU: "openvino" or "onnxruntime" (DFSCAN_CPU_RUNTIME:
    auto, the default, takes OpenVINO where it is installed). Known without importing OpenVINO, unless `loaded`:
    then "openvino" only where it also loads."""
    choice = _cpu_runtime_choice()
    if choice == "onnxruntime" or (choice == "auto" and importlib.util.find_spec("openvino") is None):
        return "onnxruntime"
    if loaded and _openvino_core() is None:
        return "onnxruntime"
    return "openvino"


def openvino_required() -> bool:
    """DFSCAN_CPU_RUNTIME=openvino: OpenVINO asked for by name, so failing to load or compile is a setup error."""
    return _cpu_runtime_choice() == "openvino"


def _cpu_runtime_choice() -> str:
    choice = os.environ.get(CPU_RUNTIME_VARIABLE, "").strip().lower() or "auto"
    if choice not in CPU_RUNTIMES:
        raise UsageError(f"{CPU_RUNTIME_VARIABLE} must be one of {', '.join(CPU_RUNTIMES)}, not {choice!r}")
    return choice


@functools.lru_cache(maxsize=None)
def _openvino_core() -> Any | None:
    """OpenVINO's Core; None where it does not load and DFSCAN_CPU_RUNTIME does not ask for it by name (the
    networks then run on onnxruntime, and provenance says so)."""
    try:
        import openvino  # noqa: PLC0415 - optional dependency, imported on demand

        return openvino.Core()
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways; auto then uses onnxruntime
        if openvino_required():
            raise RuntimeMissingError(f"{CPU_RUNTIME_VARIABLE}=openvino, but OpenVINO does not load "
                                      f"({type(exc).__name__}: {exc}): pip install openvino") from None
        return None


class OpenVinoSession:
    """An ONNX model compiled by OpenVINO for the CPU, run like an onnxruntime session: `run(None, {name:
    array})` returns the outputs in the model's order. Each calling thread has its own infer request (a
    request is not thread-safe; map_runs calls from several threads)."""

    def __init__(self, core: Any, model: Path, threads: int | None):
        config = {
            # f32 throughout: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise compute in bf16
            # (PNet's outputs off by ~3e-2 instead of ~2e-6).
            "INFERENCE_PRECISION_HINT": "f32",
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Scan workers share the machine's cores; threads pinned by each of them would pile onto the same ones.
            "ENABLE_CPU_PINNING": False,
            "CPU_RUNTIME_CACHE_CAPACITY": OPENVINO_SHAPE_CACHE,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
        self._outputs = len(self._compiled.outputs)
        self._requests = threading.local()
        self._tensor = sys.modules["openvino"].Tensor
        self.version = sys.modules["openvino"].get_version().split("-")[0]  # "2026.4.1-22982-e213a14..."

    def run(self, output_names: Any, feeds: dict[str, Any]) -> list[Any]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        # Tensors set directly: `request.infer(inputs)` spends ~0.15 ms a call sorting out what it was given,
        # 15% of an RNet run of 16 crops. The inputs are only read during the call, so they can be shared.
        for index, value in enumerate(feeds.values()):
            contiguous = value if value.flags.c_contiguous else value.copy(order="C")
            request.set_input_tensor(index, self._tensor(contiguous, shared_memory=True))
        request.infer()
        return [request.get_output_tensor(index).data.copy() for index in range(self._outputs)]

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU"]


def create_session(model: str | Path | bytes, device: str = "auto", threads: int | None = None,
                   openvino: bool = False) -> Any:
    """Open an onnxruntime InferenceSession on the providers `device` resolves to; with `openvino`, a CPU
    session runs on OpenVINO where it is available (`cpu_runtime()`)."""
    ort = import_ort()
    providers = providers_for(device)
    if openvino and providers == ["CPUExecutionProvider"] and not isinstance(model, bytes) \
            and cpu_runtime() == "openvino":
        core = _openvino_core()
        if core is not None:
            try:
                return _open(lambda: OpenVinoSession(core, Path(model), threads), model)
            except ModelError:
                if openvino_required():
                    raise
                # auto: OpenVINO cannot compile it here (a CPU it does not support): onnxruntime runs it instead
    options = _session_options(ort, threads)
    source = model if isinstance(model, bytes) else str(model)
    return _open(lambda: ort.InferenceSession(source, options, providers=providers), model)


def _open(load: Callable[[], Item], model: str | Path | bytes) -> Item:
    """load(), with a missing or unreadable model file as one ModelError line."""
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelError(f"model file {model} not found")
    try:
        return load()
    except Exception as exc:  # noqa: BLE001 - ORT and OpenVINO raise several unrelated types for a bad file
        name = "model bytes" if isinstance(model, bytes) else str(model)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load {name} as ONNX: {first_line}") from None


def session_provider(session: Any) -> str:
    """The provider a session actually runs on (the first one ORT kept)."""
    return session.get_providers()[0]


def session_runtime(session: Any) -> str:
    """What runs a session, with its version, for provenance: "onnxruntime 1.32.0 CPUExecutionProvider"."""
    if isinstance(session, OpenVinoSession):
        return f"openvino {session.version} CPU f32"
    return f"onnxruntime {import_ort().__version__} {session_provider(session)}"

"""`scan --engine ray`: the same scans as `dfscan.scan.iter_scan`, on a pool of Ray actors.

The driver lists the paths; each actor loads the model bundle once and scans one video at a time; results
come back in completion order and go to the same writers as the local engine. Without an address an
embedded local Ray is started (and stopped at the end); `auto` or `ray://host:port` joins a cluster, whose
workers need dfscan installed and the videos and bundle at the same paths.

Plain Ray actors rather than Ray Data: a video whose scan kills its process must become one ERROR row
while the batch goes on, and Ray Data fails the whole dataset once its retries are spent. Each actor
holds one video at a time so that a crash is attributed to the video that caused it. A killed actor is
restarted by Ray and its video retried (`retries`); a video that still kills it becomes an ERROR row with
error_code `worker_crash`. Every input gives exactly one row.
"""
from __future__ import annotations

import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from dfscan import verdict
from dfscan.errors import ClusterError, RuntimeMissingError, UsageError
from dfscan.results import VideoResult
from dfscan.scan import DetectorSettings, Scanner, ScanSettings

RAY_MISSING = "--engine ray needs Ray: pip install 'dfscan[cpu,ray]'"
ScannerFactory = Callable[[], Any]  # () -> an object with .scan(path, settings) -> VideoResult


def import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415 - Ray is an optional extra and slow to import
    except ImportError:
        raise RuntimeMissingError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class RayPlan:
    """How many actors, and what each asks Ray for."""
    actors: int
    threads: int              # threads per actor for its onnxruntime runs (= CPUs it reserves)
    gpus_per_actor: float


def plan_actors(cluster_cpus: float, node_cpus: float, actors: int | None, gpus_per_actor: float) -> RayPlan:
    """Default: one actor per CPU. Each actor reserves as many CPUs as it runs threads, at most a node's."""
    count = actors or max(1, int(cluster_cpus))
    threads = max(1, min(int(node_cpus), int(cluster_cpus) // count))
    return RayPlan(count, threads, gpus_per_actor)


class _ScanActor:
    """One scanner per actor process, built once (the bundle and detector load take seconds)."""

    def __init__(self, factory: ScannerFactory):
        self.scanner = factory()

    def scan(self, path: str, settings: ScanSettings) -> VideoResult:
        return self.scanner.scan(path, settings)


@dataclass(frozen=True)
class _BuildScanner:
    """A picklable scanner factory: the bundle is loaded where the actor runs, not on the driver."""
    model: str | None
    device: str
    threads: int
    detector: DetectorSettings

    def __call__(self) -> Scanner:
        return Scanner(self.model, device=self.device, threads=self.threads, detector=self.detector)


def crash_result(path: str, reason: str) -> VideoResult:
    from dfscan.likelihood import attach_likelihood_ratios  # noqa: PLC0415

    result = VideoResult(path=path, label=verdict.ERROR, error_code="worker_crash",
                         reason=f"worker failed: {reason}".splitlines()[0])
    attach_likelihood_ratios(result, None)  # ERROR: no LR, with the reason
    return result


REACH_TIMEOUT_S = 5.0  # to open a TCP connection to a cluster's head; Ray itself waits minutes, in silence


def _connect(ray: Any, address: str | None, local_cpus: int | None) -> bool:
    """Join or start Ray; True when this call started it (and so should stop it). A cluster that cannot be
    reached or joined is a ClusterError (one line, exit 4), not Ray's traceback or a wait of minutes."""
    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, ValueError, RuntimeError ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"--address {address}: cannot join a Ray cluster ({reason})") from None
    else:
        # Ray's own start-up lines (INFO, WARNING) are not the scan's: a batch's stderr stays its rows and errors
        ray.init(num_cpus=local_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    return True


def check_address(address: str) -> None:
    """'auto', or host:port (ray://host:port) that accepts a connection within REACH_TIMEOUT_S: a malformed one is
    a UsageError (exit 2), one where nobody answers a ClusterError (exit 4). Checked before any output is opened."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address}: not 'auto', host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def _check_gpus(ray: Any, gpus_per_actor: float) -> None:
    gpus = ray.cluster_resources().get("GPU", 0.0) if gpus_per_actor > 0 else 0.0
    if gpus < gpus_per_actor:
        raise ClusterError(f"--gpus-per-actor {gpus_per_actor:g}: the Ray cluster has {gpus:g} GPUs, so no actor "
                           "could start")


def _cpus(ray: Any) -> tuple[float, float]:
    """(CPUs in the cluster, CPUs of its largest node)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [n.get("Resources", {}).get("CPU", 0.0) for n in nodes] or [1.0]
    return ray.cluster_resources().get("CPU", 1.0), max(per_node)


def iter_scan_ray(paths: Iterable[str | Path], model: str | Path | None = None, device: str = "auto",
                  settings: ScanSettings | None = None, actors: int | None = None, address: str | None = None,
                  gpus_per_actor: float = 0.0, retries: int = 1, local_cpus: int | None = None,
                  scanner_factory: ScannerFactory | None = None) -> Iterator[VideoResult]:
    """Scan `paths` on Ray actors, yielding each result as soon as it is finished (completion order).

    `retries`: how often Ray reruns a video whose actor died (the actor is restarted first).
    `scanner_factory` replaces the default Scanner (tests use it to make an actor crash)."""
    ray = import_ray()
    settings = settings or ScanSettings()
    model_arg = None if model is None else str(model)
    if scanner_factory is None:  # fail fast on a bad bundle, before any actor starts
        from dfscan.model.manifest import load_manifest  # noqa: PLC0415
        from dfscan.model.scorer import default_bundle_path  # noqa: PLC0415

        load_manifest(model_arg or default_bundle_path())
    started_here = _connect(ray, address, local_cpus)
    try:
        _check_gpus(ray, gpus_per_actor)
        cluster_cpus, node_cpus = _cpus(ray)
        plan = plan_actors(cluster_cpus, node_cpus, actors, gpus_per_actor)
        actor_device = "cuda" if gpus_per_actor > 0 else device
        factory = scanner_factory or _BuildScanner(model_arg, actor_device, plan.threads, settings.detector)
        actor_cls = ray.remote(_ScanActor).options(num_cpus=plan.threads, num_gpus=plan.gpus_per_actor,
                                                   max_restarts=-1, max_task_retries=retries)
        pool = [actor_cls.remote(factory) for _ in range(plan.actors)]
        try:
            yield from _drive(ray, pool, paths, settings)
        finally:
            for actor in pool:
                ray.kill(actor)
    finally:
        if started_here:
            ray.shutdown()


def _any_node_alive(ray: Any) -> bool:
    try:
        return any(node.get("Alive") for node in ray.nodes())
    except Exception:  # noqa: BLE001 - the cluster's control store is gone too
        return False


def _drive(ray: Any, pool: list[Any], paths: Iterable[str | Path], settings: ScanSettings
           ) -> Iterator[VideoResult]:
    """One video in flight per actor; results in completion order; an actor death is that video's row, unless
    the cluster has no node left (a ClusterError: the videos not done get no row, so --resume scans them)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError  # noqa: PLC0415

    died = (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError)
    free = deque(pool)
    pending: dict[Any, tuple[str, Any]] = {}
    todo = iter(paths)
    while True:
        while free:
            path = next(todo, None)
            if path is None:
                break
            actor = free.popleft()
            pending[actor.scan.remote(str(path), settings)] = (str(path), actor)
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            path, actor = pending.pop(ref)
            free.append(actor)
            try:
                yield ray.get(ref)
            except died as exc:
                if not _any_node_alive(ray):  # not this video's doing: every video after it would fail alike
                    raise ClusterError(f"the Ray cluster lost its nodes while scanning {path} "
                                       f"({str(exc).strip().splitlines()[0]}): the rows written so far stay, "
                                       "and --resume scans the videos left") from None
                yield crash_result(path, f"{type(exc).__name__} (the actor died; retried)")
            except ray.exceptions.RayError as exc:
                yield crash_result(path, f"{type(exc).__name__}: {exc}")

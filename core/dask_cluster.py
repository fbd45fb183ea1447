"""`triage dask up|down|status`: a local `dask.distributed` cluster for `triage batch` on Beam's DaskRunner.

A scheduler and N workers as separate processes on loopback (each worker: one process, one thread, so N workers
use N cores and a model is loaded once per worker), started like the other local servers (core/services.py: pid
and log files under `services.data_dir`/dask, a process that outlives the CLI). What was started is recorded in
cluster.json there, so `down` and `status` need no options. A real cluster is started the same way on its
machines (`dask scheduler`, `dask worker ADDRESS --nthreads 1`); the pipeline only needs its address.
"""
from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from core.config import ServicesSettings
from core.services import Service, ServiceError, describe, port_open, start, stop

DEFAULT_PORT, DEFAULT_DASHBOARD_PORT = 8786, 8787
_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Cluster:
    port: int
    dashboard_port: int
    workers: int

    @property
    def address(self) -> str:
        return f"tcp://{_HOST}:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://{_HOST}:{self.dashboard_port}/status"

    def beam_args(self) -> str:
        """What to put after `--` on a `triage batch` command line to run on this cluster."""
        return f"--runner=DaskRunner --dask_client_address={self.address}"


def _folder(cfg: ServicesSettings) -> Path:
    return Path(cfg.data_dir).resolve() / "dask"


def _identity(cluster: Cluster) -> Optional[dict]:
    """The scheduler's own account of itself and its workers (its HTTP endpoint), or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{_HOST}:{cluster.dashboard_port}/json/identity.json", timeout=2) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


def _worker_name(index: int) -> str:
    return f"triage-worker-{index}"


def _services(cfg: ServicesSettings, cluster: Cluster) -> list[Service]:
    folder = _folder(cfg)
    scheduler = Service("dask-scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", _HOST,
                                           "--port", str(cluster.port),
                                           "--dashboard-address", f"{_HOST}:{cluster.dashboard_port}"],
                        [cluster.port, cluster.dashboard_port], lambda: _identity(cluster) is not None, folder)

    def worker(index: int) -> Service:
        name = _worker_name(index)

        def registered() -> bool:
            identity = _identity(cluster) or {}
            return any(w.get("name") == name for w in identity.get("workers", {}).values())

        return Service(f"dask-{name}", [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address,
                                        "--name", name, "--nthreads", "1", "--nworkers", "1", "--host", _HOST,
                                        "--no-dashboard", "--local-directory", str(folder / name)],
                       [], registered, folder)

    return [scheduler, *(worker(i) for i in range(1, cluster.workers + 1))]


def recorded(cfg: ServicesSettings) -> Optional[Cluster]:
    """The cluster `up` started last (None if none was started or it was stopped)."""
    try:
        return Cluster(**json.loads((_folder(cfg) / "cluster.json").read_text()))
    except FileNotFoundError:
        return None


def up(cfg: ServicesSettings, workers: int, port: int = DEFAULT_PORT,
       dashboard_port: int = DEFAULT_DASHBOARD_PORT) -> list[str]:
    """Start the scheduler, then the workers, each waited for until the scheduler lists it."""
    if workers < 1:
        raise ServiceError("--workers must be at least 1")
    running = recorded(cfg)
    if running is not None and any(s.pid() for s in _services(cfg, running)):
        raise ServiceError(f"a cluster is already running at {running.address} with {running.workers} "
                           f"worker(s); stop it first with `triage dask down`")
    cluster = Cluster(port, dashboard_port, workers)
    if port_open(port) or port_open(dashboard_port):
        raise ServiceError(f"port {port if port_open(port) else dashboard_port} is already in use; choose "
                           f"others with --port and --dashboard-port")
    folder = _folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster.json").write_text(json.dumps(asdict(cluster)))
    lines = []
    try:
        for service in _services(cfg, cluster):
            lines.append(start(service, cfg.start_timeout_s))
    except ServiceError:
        down(cfg)
        raise
    return lines + [f"scheduler: {cluster.address}", f"dashboard: {cluster.dashboard}",
                    f"run a batch on it: triage batch ... -- {cluster.beam_args()}"]


def down(cfg: ServicesSettings) -> list[str]:
    """Stop the workers, then the scheduler."""
    cluster = recorded(cfg)
    if cluster is None:
        return ["dask: not running"]
    lines = [stop(service) for service in reversed(_services(cfg, cluster))]
    (_folder(cfg) / "cluster.json").unlink(missing_ok=True)
    return lines


def status(cfg: ServicesSettings) -> list[str]:
    cluster = recorded(cfg)
    if cluster is None:
        return ["dask: not running"]
    return [describe(service) for service in _services(cfg, cluster)] + [f"scheduler: {cluster.address}", f"dashboard: {cluster.dashboard}"]

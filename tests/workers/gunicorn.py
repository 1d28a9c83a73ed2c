"""A real gunicorn (`config.wsgi` on gthread workers, or `config.asgi` on uvicorn workers) on the test
database, for the tests of what only a real server shows: a worker process dying, a pool of threads
held by long requests, offers pushed through Redis to the async channel.

The server runs in a process group of its own with an access log (`%(s)s` status first on each line)
and an error log in the test's tmp_path; every wait is bounded, and `stop()` kills the group.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.db import connection

from tests.workers.conftest import ROOT, _postgres_url

ACCESS_LOG_FORMAT = '%(s)s %(m)s "%(U)s" %(L)s'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    children.append(int(entry.name))
    return children


class Gunicorn:
    def __init__(
        self,
        tmp_path: Path,
        *,
        workers: int = 1,
        threads: int = 4,
        app: str = "config.wsgi:application",
        worker_class: str = "gthread",
        **env,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.access_log = tmp_path / "gunicorn-access.log"
        self.error_log = tmp_path / "gunicorn-error.log"
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            f"--bind=127.0.0.1:{self.port}",
            f"--workers={workers}",
            f"--worker-class={worker_class}",
            f"--threads={threads}",
            "--timeout=60",
            f"--access-logfile={self.access_log}",
            f"--access-logformat={ACCESS_LOG_FORMAT}",
            f"--error-logfile={self.error_log}",
        ]
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": _postgres_url(connection.settings_dict),
            "DATABASE_CONN_MAX_AGE": "0",
            "GUNICORN_THREADS": str(threads),
            "PYTHONPATH": str(ROOT),
            **{name: str(value) for name, value in env.items()},
        }
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 60) -> "Gunicorn":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.errors()}")
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.url}/api/v1/me", timeout=2)
                if len(self.worker_pids()) >= self.workers:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not answer in {timeout_s} s:\n{self.errors()}")

    def worker_pids(self) -> list[int]:
        return sorted(child_pids(self.process.pid))

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def statuses(self) -> list[str]:
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        return [line.split(" ", 1)[0] for line in text.splitlines() if line]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)

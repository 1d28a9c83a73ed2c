"""A redis-server of the test's own on a free port, which the test may kill and restart (the shared
Redis of the machine is never touched). Without the `redis-server` binary the test skips, or fails
under CPX_REQUIRE_SERVICES=1."""

import contextlib
import shutil
import socket
import subprocess
import time

import redis

from tests.conftest import service_unavailable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            service_unavailable("needs the redis-server binary to run a Redis the test may kill")
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
                try:
                    if client.ping():
                        return self
                finally:
                    client.close()
            time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not answer")

    def kill(self) -> None:
        """SIGKILL: no shutdown, connections drop as on a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()

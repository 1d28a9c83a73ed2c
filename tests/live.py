"""Helpers shared by the tests that run a live market in threads (tests/workers, tests/browser)."""

import contextlib
import threading
import time

from django.db import connection, connections


def wait_for(condition, *, timeout_s: float = 30.0, step_s: float = 0.1, what="a condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout_s` seconds saying
    `what` (a string, or a function giving one — e.g. the logs — read only on failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(step_s)


class SharedDatabase:
    """Who may touch the database when: everyone at once on PostgreSQL; one at a time on SQLite's
    in-memory test database, whose single connection every thread shares (Django keeps
    transaction state on it, so threads take turns; the code paths are the real ones)."""

    def __init__(self):
        self.shared = connection.vendor == "sqlite" and connection.is_in_memory_db()
        self.connection = connections["default"]
        self.lock = threading.RLock()

    @contextlib.contextmanager
    def turn(self):
        if not self.shared:
            yield
            return
        with self.lock:
            yield

    def read(self, query):
        with self.turn():
            return query()

    def adopt(self) -> None:
        """Run in a new thread: use the test's connection there (SQLite in memory)."""
        if self.shared:
            connections["default"] = self.connection

    def wsgi(self, app):
        if not self.shared:
            return app

        def serialised(environ, start_response):
            with self.lock:
                return app(environ, start_response)

        return serialised

"""The embedded default: a Celery worker and beat inside this process, as daemon threads.

With no CELERY_BROKER_URL the broker is `memory://`, which only works inside one process: the
web server (`cpx_serve`), `cpx_demo` and the tests start an `EmbeddedCelery` next to their own
code and the market moves with no Redis. It is the same worker machinery as `celery -A config
worker --pool=solo` (one task at a time, in the worker thread) — what `celery.contrib.testing.worker`
does — and the same beat schedule as `celery -A config beat`, with the non-persistent
`celery.beat:Scheduler` (no schedule file to leave behind).

Stopping is cooperative: the worker's loop checks `celery.worker.state.should_stop` between
messages, so `stop()` waits for the task in hand (bounded by its time limits) and returns.
"""

import logging
import threading

from celery import Celery
from celery.beat import EmbeddedService
from celery.result import _set_task_join_will_block
from celery.utils.nodenames import anon_nodename
from celery.worker import WorkController
from celery.worker import state as worker_state

logger = logging.getLogger(__name__)


class _WorkController(WorkController):
    """A WorkController that says when its consumer is ready to take messages."""

    def __init__(self, *args, ready: threading.Event, **kwargs):
        self._ready = ready
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer):
        self._ready.set()


class EmbeddedCelery:
    """An in-process worker (and optionally beat) for `app`; `start()`, then `stop()` (or `with`).

    `on_thread_start` runs first thing in the worker thread (tests use it to share their
    in-memory SQLite connection with the thread, as Django's live server does).
    """

    def __init__(
        self,
        app: Celery | None = None,
        *,
        beat: bool = True,
        loglevel: str = "WARNING",
        hostname: str | None = None,
        on_thread_start=None,
    ):
        if app is None:
            from config.celery import app as cpx_app

            app = cpx_app
        self.app = app
        self.beat_enabled = beat
        self.loglevel = loglevel
        self.hostname = hostname or f"embedded-{anon_nodename()}"
        self.on_thread_start = on_thread_start
        self.worker: WorkController | None = None
        self.beat = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    def start(self, timeout: float = 30.0) -> "EmbeddedCelery":
        """Start the worker thread (and beat), returning once the worker consumes its queue."""
        self.app.finalize()
        self.app.set_current()
        self.app.set_default()
        worker_state.should_stop = None
        worker_state.should_terminate = None
        self.worker = _WorkController(
            app=self.app,
            ready=self._ready,
            hostname=self.hostname,
            pool="solo",
            concurrency=1,
            loglevel=self.loglevel,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        self._thread = threading.Thread(target=self._run, name="celery-worker (embedded)", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the embedded Celery worker did not start within {timeout} s: {self._failed}")
        # A worker marks the process as one whose result.get() would deadlock a task; this process
        # is not only the worker, so its other threads may wait for results (as Celery's test worker).
        _set_task_join_will_block(False)
        if self.beat_enabled:
            self.beat = EmbeddedService(self.app, thread=True, scheduler_cls="celery.beat:Scheduler")
            self.beat.name = "celery-beat (embedded)"
            self.beat.start()
        logger.info("embedded Celery worker%s started", " and beat" if self.beat_enabled else "")
        return self

    def _run(self) -> None:
        try:
            if self.on_thread_start is not None:
                self.on_thread_start()
            self.worker.start()
        except BaseException as error:  # noqa: BLE001 — surfaced through start()/stop()
            self._failed = error
            self._ready.set()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop beat, then the worker after the task in hand; wait at most `timeout` seconds."""
        if self.beat is not None:
            self.beat.stop()
            self.beat = None
        if self._thread is not None:
            worker_state.should_stop = 0
            self._thread.join(timeout)
            alive = self._thread.is_alive()
            worker_state.should_stop = None
            self._thread = None
            if alive:
                raise RuntimeError(f"the embedded Celery worker did not stop within {timeout} s")
        logger.info("embedded Celery stopped")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "EmbeddedCelery":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

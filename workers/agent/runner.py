"""The agent's loop: heartbeat on a timer, long-poll for offers, accept what the resource's devices
can hold, run each lease in its own thread, report progress, complete or fail with a reason."""

import logging
import threading
from dataclasses import dataclass, field

from workers.agent.backends import JobError, ProviderFault, Stopped, Usage
from workers.agent.batch import run_verifications
from workers.agent.client import AgentClient, ApiError, Unavailable

logger = logging.getLogger("cpx.agent")


class LeaseGone(Exception):
    """The exchange closed the lease under us (failed over, cancelled): stop and report nothing."""


@dataclass
class LeaseRun:
    lease: dict
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    gone: bool = False
    outcome: str = ""


class Agent:
    def __init__(
        self,
        client: AgentClient,
        backend,
        *,
        poll_wait_s: float = 20.0,
        heartbeat_s: float | None = None,
        once: bool = False,
        idle_backoff_s: float = 2.0,
        verify_models: tuple[str, ...] = (),
    ):
        self.client = client
        self.backend = backend
        if hasattr(backend, "bind"):
            backend.bind(client)
        self.poll_wait_s = poll_wait_s
        self.heartbeat_s = heartbeat_s
        self.once = once
        self.idle_backoff_s = idle_backoff_s
        self.verify_models = list(verify_models)  # serve spot checks of jobs naming these models
        self.verified = 0
        self.runs: dict[int, LeaseRun] = {}
        self.finished: dict[int, str] = {}
        self.devices_in_use: dict[int, int] = {}
        self.stopping = threading.Event()
        self.killed = False
        self.started = threading.Event()  # set when a lease starts running (tests wait on it)
        self._lock = threading.Lock()

    # --- lifecycle

    def run(self) -> int:
        """Run until stopped (or, with once, until the leases of one poll are done). Exit code."""
        try:
            answer = self.client.heartbeat([])
        except ApiError as error:
            logger.error("the exchange refused the agent: %s", error)
            return 2
        except Unavailable as error:
            logger.warning("exchange unreachable at start, carrying on: %s", error)
            answer = {}
        interval = self.heartbeat_s or max(1.0, float(answer.get("heartbeat_timeout_s", 30)) / 3)
        beat = threading.Thread(
            target=self._heartbeat_loop, args=(interval,), name="cpx-heartbeat", daemon=True
        )
        beat.start()
        code = 0
        while not self.stopping.is_set():
            try:
                offers = self.client.poll(wait=self.poll_wait_s)
            except Unavailable as error:
                logger.warning("poll failed: %s", error)
                self.stopping.wait(self.idle_backoff_s)
                continue
            except ApiError as error:
                logger.error("poll refused: %s", error)
                if error.status in (401, 403):
                    code = 2
                    break
                self.stopping.wait(self.idle_backoff_s)
                continue
            for lease in offers:
                if self.stopping.is_set():
                    break
                self._start(lease)
            if self.verify_models:
                self._verify()
            if self.once:
                self._join_all()
                break
        self.stop()
        return code

    def _verify(self) -> None:
        try:
            self.verified += run_verifications(self.client, self.backend, self.verify_models)
        except (ApiError, Unavailable, ProviderFault) as error:
            logger.warning("spot checks not answered: %s", error)

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Clean shutdown: stop polling; running leases stop and fail over (PROVIDER_FAULT) at once
        instead of waiting for the sweeper."""
        self.stopping.set()
        for run in list(self.runs.values()):
            run.stop.set()
        self._join_all(timeout_s=timeout_s)

    def kill(self) -> None:
        """Vanish like a crashed process: threads stop without telling the exchange anything."""
        self.killed = True
        self.stopping.set()
        for run in list(self.runs.values()):
            run.stop.set()

    def _join_all(self, timeout_s: float | None = None) -> None:
        for run in list(self.runs.values()):
            if run.thread is not None:
                run.thread.join(timeout_s)

    # --- heartbeats

    def _heartbeat_loop(self, interval: float) -> None:
        while not self.stopping.wait(interval):
            try:
                answer = self.client.heartbeat(list(self.runs))
            except (Unavailable, ApiError) as error:
                logger.warning("heartbeat failed: %s", error)
                continue
            for lease_id in answer.get("closed", []):
                run = self.runs.get(lease_id)
                if run is not None and run.thread is not None:
                    logger.info("lease %s was closed by the exchange: stopping it", lease_id)
                    run.gone = True
                    run.stop.set()

    # --- one lease

    def _start(self, lease: dict) -> None:
        lease_id, resource = lease["id"], lease["resource"]
        devices, capacity = int(lease["devices"]), int(lease.get("resource_device_count") or lease["devices"])
        with self._lock:
            if lease_id in self.runs:
                return
            if self.devices_in_use.get(resource, 0) + devices > capacity:
                logger.info("lease %s waits: resource %s has no free device", lease_id, resource)
                return
            self.devices_in_use[resource] = self.devices_in_use.get(resource, 0) + devices
            run = self.runs[lease_id] = LeaseRun(lease)
        try:
            self.client.accept(lease_id, simulated=self.backend.simulated)
        except (ApiError, Unavailable) as error:
            logger.warning("could not accept lease %s: %s", lease_id, error)
            self._release(run)
            return
        job = lease.get("job") or {}
        logger.info(
            "took lease %s: job %s (%s %s) on %s device(s) of resource %s (%s), %s per device-hour",
            lease_id,
            job.get("id"),
            job.get("kind", "?"),
            job.get("model_name", "?"),
            devices,
            resource,
            lease.get("resource_class", "?"),
            lease.get("unit_price_received", "?"),
        )
        terms = (lease.get("sla") or {}).get("terms") or {}
        if terms:  # the contract the agent just accepted (docs/sla.md)
            logger.info(
                "lease %s SLA: p95 RTT <= %s ms, complete by %s, min quality %s",
                lease_id,
                terms.get("latency_p95_ms") or "-",
                terms.get("complete_by") or "-",
                terms.get("min_quality") or "-",
            )
        gang = lease.get("gang")
        if gang:  # one stage of a pipeline split across providers (docs/fusionai-gangs.md)
            logger.info(
                "lease %s is stage %s of %s of a gang: layers %s-%s of %s; peers %s",
                lease_id,
                gang["stage"],
                gang["stages"],
                gang["layers"][0],
                gang["layers"][1] - 1,
                gang.get("model_layers", "?"),
                ", ".join(f"{p['stage']}: provider {p['provider']} ({p['region']})" for p in gang["peers"]),
            )
        run.thread = threading.Thread(target=self._run_lease, args=(run,), name=f"cpx-lease-{lease_id}")
        run.thread.start()
        self.started.set()

    def _release(self, run: LeaseRun) -> None:
        with self._lock:
            self.runs.pop(run.lease["id"], None)
            resource = run.lease["resource"]
            self.devices_in_use[resource] = max(
                0, self.devices_in_use.get(resource, 0) - int(run.lease["devices"])
            )

    def _run_lease(self, run: LeaseRun) -> None:
        lease_id = run.lease["id"]
        try:
            usage = self.backend.run(run.lease, lambda usage: self._report(run, usage), run.stop)
            self._finish(run, usage)
        except (LeaseGone, Stopped):
            if self.killed or run.gone:
                run.outcome = "abandoned"
            else:
                self._fail(run, "PROVIDER_FAULT", "the agent was shut down")
        except JobError as error:
            self._fail(run, "JOB_ERROR", str(error))
        except ProviderFault as error:
            self._fail(run, "PROVIDER_FAULT", str(error))
        except Exception as error:  # a bug in a backend must not kill the agent silently
            logger.exception("lease %s crashed", lease_id)
            self._fail(run, "PROVIDER_FAULT", f"agent error: {type(error).__name__}: {error}")
        finally:
            self.finished[lease_id] = run.outcome
            self._release(run)

    def _report(self, run: LeaseRun, usage: Usage) -> None:
        if self.killed:
            raise Stopped()
        try:
            self.client.progress(
                run.lease["id"],
                progress=usage.progress,
                tokens_in=usage.tokens_in,
                tokens_out=usage.tokens_out,
                device_seconds=usage.device_seconds,
            )
        except ApiError as error:
            if error.code in ("lease_already_closed", "lease_not_found"):
                run.gone = True
                raise LeaseGone(str(error)) from None
            logger.warning("progress of lease %s refused: %s", run.lease["id"], error)
        except Unavailable as error:
            logger.warning("progress of lease %s not delivered: %s", run.lease["id"], error)

    def _finish(self, run: LeaseRun, usage: Usage) -> None:
        if self.killed:
            run.outcome = "abandoned"
            return
        try:
            self.client.complete(
                run.lease["id"],
                tokens_in=usage.tokens_in,
                tokens_out=usage.tokens_out,
                device_seconds=usage.device_seconds,
            )
            run.outcome = "completed"
            logger.info(
                "finished lease %s: completed, %s tokens in, %s out, %.1f device-seconds",
                run.lease["id"],
                usage.tokens_in,
                usage.tokens_out,
                float(usage.device_seconds),
            )
        except ApiError as error:
            # A retry whose first attempt got through: the lease is already completed, and paid once.
            if error.code == "lease_already_closed" and error.extra.get("status") == "COMPLETED":
                run.outcome = "completed"
            else:
                logger.error("completion of lease %s refused: %s", run.lease["id"], error)
                run.outcome = f"refused:{error.code}"
        except Unavailable as error:
            logger.error("completion of lease %s not delivered: %s", run.lease["id"], error)
            run.outcome = "undelivered"

    def _fail(self, run: LeaseRun, reason: str, detail: str) -> None:
        logger.info("failing lease %s: %s %s", run.lease["id"], reason, detail)
        try:
            self.client.fail(run.lease["id"], reason=reason, detail=detail)
            run.outcome = f"failed:{reason}"
        except (ApiError, Unavailable) as error:
            logger.error("failure of lease %s not recorded: %s", run.lease["id"], error)
            run.outcome = f"fail-undelivered:{reason}"

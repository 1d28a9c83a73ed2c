"""HTTP client of the agent API, with retry and backoff for what is worth retrying.

Connection failures, timeouts, 429 and 5xx are retried with exponential backoff (honouring
Retry-After); any other 4xx is the exchange's answer and raised at once as ApiError with its code.
Retrying a POST is safe: every agent call is a compare-and-set on the server, so a retry whose
first attempt got through answers 409 (e.g. `lease_already_closed`) and changes nothing.
"""

import contextlib
import threading
import time
from collections.abc import Callable

import requests

RETRY_STATUSES = {429, 500, 502, 503, 504}


class ApiError(Exception):
    """The exchange refused the call: HTTP status, stable code, message, extra."""

    def __init__(self, status: int, code: str, message: str, extra: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


class Unavailable(Exception):
    """The exchange could not be reached (or kept failing) after every retry."""


class AgentClient:
    def __init__(
        self,
        api: str,
        key: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api = api.rstrip("/")
        if not self.api.endswith("/api/v1"):
            self.api += "/api/v1"
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self._local = threading.local()  # a requests.Session is not shared between threads
        # One short call at a time per agent (heartbeats, probe echoes, lease reports; not the offer
        # long-polls): the probe's echo then never queues behind this agent's own traffic, and an
        # embedded exchange on one SQLite connection sees one call of an agent at a time.
        self._one_call = threading.Lock()
        self.offer_channel = True  # until the exchange answers that it has no /agent/offers

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self.headers)
        return session

    def request(
        self, method: str, path: str, *, json=None, params=None, timeout_s: float | None = None, raw=False
    ):
        delay = self.backoff_s
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
            try:
                with contextlib.nullcontext() if (params or {}).get("wait") else self._one_call:
                    response = self._session().request(
                        method, self.api + path, json=json, params=params, timeout=timeout_s or self.timeout_s
                    )
            except (requests.ConnectionError, requests.Timeout) as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in RETRY_STATUSES:
                last = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = min(max(delay, float(retry_after)), self.max_backoff_s)
                continue
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                raise ApiError(
                    response.status_code,
                    body.get("code", "error"),
                    body.get("message", response.text[:200]),
                    body.get("extra"),
                )
            return response if raw else response.json()
        raise Unavailable(f"{method} {path} failed after {self.retries + 1} attempts: {last}")

    def heartbeat(self, lease_ids=()) -> dict:
        """Heartbeat, then echo its latency probe at once (CPX measures the RTT of the echo; an
        exchange without probes gives none, and a refused echo never fails the heartbeat)."""
        answer = self.request("POST", "/agent/heartbeat", json={"leases": sorted(lease_ids)})
        probe = answer.get("probe") if isinstance(answer, dict) else None
        if probe:
            try:
                self.request("POST", "/agent/probes", json={"token": probe})
            except ApiError:
                pass
        return answer

    def poll(self, *, wait: float = 0) -> list[dict]:
        """The offers, waiting up to `wait` s for one: on the async channel `/agent/offers` (pushed
        when the round commits, no thread held on the server); on an exchange without it (404 for
        the path), the sync long-poll `/agent/leases` from then on."""
        if self.offer_channel:
            try:
                return self.request(
                    "GET", "/agent/offers", params={"wait": wait}, timeout_s=self.timeout_s + wait
                )
            except ApiError as error:
                if not (error.status == 404 and "path" in error.extra):
                    raise
                self.offer_channel = False
        return self.request("GET", "/agent/leases", params={"wait": wait}, timeout_s=self.timeout_s + wait)

    def lease(self, lease_id: int) -> dict:
        return self.request("GET", f"/agent/leases/{lease_id}")

    def accept(self, lease_id: int, *, simulated: bool = False) -> dict:
        return self.request("POST", f"/agent/leases/{lease_id}/accept", json={"simulated": simulated})

    def progress(
        self, lease_id: int, *, progress: float, tokens_in: int, tokens_out: int, device_seconds
    ) -> dict:
        body = {
            "progress": progress,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "device_seconds": str(device_seconds),
        }
        return self.request("POST", f"/agent/leases/{lease_id}/progress", json=body)

    def complete(self, lease_id: int, *, tokens_in: int, tokens_out: int, device_seconds) -> dict:
        body = {"tokens_in": tokens_in, "tokens_out": tokens_out, "device_seconds": str(device_seconds)}
        return self.request("POST", f"/agent/leases/{lease_id}/complete", json=body)

    def fail(self, lease_id: int, *, reason: str, detail: str = "") -> dict:
        body = {"reason": reason, "detail": detail[:300]}
        return self.request("POST", f"/agent/leases/{lease_id}/fail", json=body)

    def batch_state(self, lease_id: int) -> dict:
        return self.request("GET", f"/agent/leases/{lease_id}/batch")

    def lease_input(self, lease_id: int) -> bytes:
        return self.request("GET", f"/agent/leases/{lease_id}/input", raw=True).content

    def batch_results(self, lease_id: int, results: list[dict]) -> dict:
        return self.request("POST", f"/agent/leases/{lease_id}/results", json={"results": results})

    def verifications(self, models: list[str]) -> list[dict]:
        return self.request("GET", "/agent/verifications", params={"models": ",".join(models)})

    def verification_results(self, verification_id: int, results: list[dict]) -> dict:
        return self.request(
            "POST", f"/agent/verifications/{verification_id}/results", json={"results": results}
        )

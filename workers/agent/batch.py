"""Batch inference at the provider: the job's OpenAI Batch input file, run request by request against
the provider's own OpenAI-compatible server with bounded concurrency, results sent back as they come.

- The input is read with the lease's credentials (`GET /agent/leases/{id}/input`) and checked against
  the sha256 the exchange recorded; requests already answered for the job (`done`, from this lease
  before a restart or from a failed-over one) are skipped, so the run resumes after the last
  recorded result.
- Each answered request becomes an OpenAI Batch output line (`custom_id`, `response` with
  `status_code`, `request_id` and `body`, or `error`); lines go to `POST /agent/leases/{id}/results`
  every `flush_every` results or `flush_s` seconds, which is also the lease's progress and heartbeat.
- An HTTP answer of the server, even an error status, is that request's result: per-request errors
  are recorded, never a lease failure. A server that cannot be reached at all (after retries) is a
  ProviderFault: the lease fails over and the next provider resumes from what was recorded.
- `stop` (shutdown, or the exchange closed the lease) ends the run at once; results not yet sent are
  run again by whoever resumes (recorded once per job, so never paid twice).
"""

import hashlib
import json
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import requests

from workers.agent.backends import JobError, ProviderFault, Stopped, Usage, device_seconds

# Statuses worth a retry before the answer counts as the request's result.
TRANSIENT = {429, 502, 503, 504}


class BatchRunner:
    def __init__(self, backend, client, *, concurrency: int = 4, flush_every: int = 25, flush_s: float = 1.0):
        self.backend = backend
        self.client = client
        self.concurrency = max(1, concurrency)
        self.flush_every = max(1, flush_every)
        self.flush_s = flush_s
        self._local = threading.local()

    def run(self, lease: dict, stop: threading.Event) -> Usage:
        lease_id = lease["id"]
        state = self.client.batch_state(lease_id)
        data = self.client.lease_input(lease_id)
        if hashlib.sha256(data).hexdigest() != state["input_file"]["sha256"]:
            raise ProviderFault("the input file does not match its recorded sha256")
        try:
            requests_ = [json.loads(line) for line in data.splitlines() if line.strip()]
        except ValueError:
            raise JobError("the input file is not JSON lines") from None
        done = set(state["done"])
        pending = [item for item in requests_ if item["custom_id"] not in done]
        default_max_tokens = int(state.get("default_max_tokens") or 256)
        started = time.monotonic()
        tokens_in = tokens_out = 0
        buffer: list[dict] = []
        last_flush = time.monotonic()
        devices = int(lease.get("devices") or 1)
        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"cpx-batch-{lease_id}"
        ) as pool:
            queue = iter(pending)
            running = set()
            try:
                while True:
                    while len(running) < self.concurrency * 2 and not stop.is_set():
                        item = next(queue, None)
                        if item is None:
                            break
                        running.add(pool.submit(self._one, item, default_max_tokens))
                    if stop.is_set():
                        raise Stopped()
                    if not running:
                        break
                    finished, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        line = future.result()  # ProviderFault propagates
                        buffer.append(line)
                        usage = ((line.get("response") or {}).get("body") or {}).get("usage") or {}
                        if (line.get("response") or {}).get("status_code") == 200:
                            tokens_in += int(usage.get("prompt_tokens") or 0)
                            tokens_out += int(usage.get("completion_tokens") or 0)
                    if len(buffer) >= self.flush_every or (
                        buffer and time.monotonic() - last_flush >= self.flush_s
                    ):
                        self._flush(lease_id, buffer, stop)
                        last_flush = time.monotonic()
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        self._flush(lease_id, buffer, stop)
        return Usage(
            1.0, tokens_in, tokens_out, device_seconds((time.monotonic() - started) * devices, lease)
        )

    def _flush(self, lease_id: int, buffer: list[dict], stop: threading.Event) -> None:
        if stop.is_set():
            raise Stopped()
        while buffer:
            chunk = buffer[:1000]
            self.client.batch_results(lease_id, chunk)
            del buffer[: len(chunk)]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def run_request(self, item: dict, default_max_tokens: int) -> dict:
        """One batch request against the server: its OpenAI Batch output line. Raises ProviderFault."""
        return self._one(item, default_max_tokens)

    def _one(self, item: dict, default_max_tokens: int) -> dict:
        body = dict(item["body"])
        body.setdefault("max_tokens", default_max_tokens)
        if self.backend.model:
            body["model"] = self.backend.model
        url = self.backend.url + item["url"]
        with self.backend._count_lock:
            self.backend.batch_requests_sent += 1
        last = ""
        response = None
        for attempt in range(self.backend.retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt * 0.25, 5.0))
            try:
                response = self._session().post(url, json=body, timeout=self.backend.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as error:
                response, last = None, f"inference server unreachable: {type(error).__name__}"
                continue
            if response.status_code not in TRANSIENT:
                break
        if response is None:
            raise ProviderFault(last)
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": {"message": response.text[:500]}}
        return {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": item["custom_id"],
            "response": {
                "status_code": response.status_code,
                "request_id": response.headers.get("x-request-id", "") or answer.get("id", ""),
                "body": answer,
            },
            "error": None,
        }


def run_verifications(client, backend, models: list[str]) -> int:
    """Act as a verifier: take the spot checks of jobs naming one of `models` (see
    auctions.services.verification), re-run their requests (temperature 0, as sent) against this
    provider's server and return the answers. Returns how many checks were answered."""
    runner = BatchRunner(backend, client, concurrency=1)
    answered = 0
    for check in client.verifications(models):
        lines = [runner.run_request(item, 256) for item in check["requests"]]
        client.verification_results(check["id"], lines)
        answered += 1
    return answered

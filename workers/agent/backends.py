"""What runs a lease: the provider's own OpenAI-compatible server, or a simulation.

A backend's `run(lease, report, stop)` does the work, calls `report(Usage)` with cumulative usage
as it goes, and returns the final Usage. It raises JobError when the job itself cannot run (the
lease fails with JOB_ERROR and the consumer is refunded), ProviderFault when the provider's side
broke (the lease fails over to another provider), Stopped when `stop` was set.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

import requests

SECONDS = Decimal("0.001")


class JobError(Exception):
    """The job cannot run as specified (JOB_ERROR)."""


class ProviderFault(Exception):
    """The provider's side failed (PROVIDER_FAULT): the job should go to someone else."""


class Stopped(Exception):
    """The agent asked the lease to stop (shutdown, or the exchange closed the lease)."""


@dataclass(frozen=True)
class Usage:
    progress: float
    tokens_in: int
    tokens_out: int
    device_seconds: Decimal


def allocated_seconds(lease: dict) -> Decimal:
    return Decimal(str(lease["allocated_device_seconds"]))


def device_seconds(value, lease: dict) -> Decimal:
    """Device-seconds at the API's quantum, never above the lease's allocation."""
    return min(Decimal(str(value)).quantize(SECONDS, rounding=ROUND_DOWN), allocated_seconds(lease))


Report = Callable[[Usage], None]


class SimulateBackend:
    """A simulation, named as one: the lease is accepted with `simulated=true`.

    It runs for expected_device_hours × 3600 / devices / speedup real seconds (the devices work
    in parallel) and reports usage in proportion to its progress: device-seconds, summed over the
    devices, up to expected_device_hours × 3600 (within the
    allocation) and, for inference, the job's workload_tokens split evenly between in and out.
    """

    name = "simulate"
    simulated = True

    def __init__(self, *, speedup: float = 600.0, tick_s: float = 1.0, clock=time.monotonic):
        if not speedup > 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self.tick_s = tick_s
        self.clock = clock

    def run(self, lease: dict, report: Report, stop: threading.Event) -> Usage:
        expected_s = float(lease["expected_device_hours"]) * 3600
        duration = expected_s / max(1, int(lease.get("devices") or 1)) / self.speedup
        tokens = lease["job"].get("workload_tokens") or 0
        tick = max(0.01, min(self.tick_s, duration / 10 if duration else self.tick_s))
        started = self.clock()
        while True:
            elapsed = self.clock() - started
            progress = 1.0 if duration <= 0 else min(1.0, elapsed / duration)
            usage = self._usage(lease, progress, expected_s, tokens)
            if progress >= 1.0:
                return usage
            report(usage)
            if stop.wait(min(tick, max(0.0, duration - elapsed))):
                raise Stopped()

    @staticmethod
    def _usage(lease: dict, progress: float, expected_s: float, tokens: int) -> Usage:
        done = math.floor(tokens * progress)
        return Usage(
            progress=progress,
            tokens_in=done // 2,
            tokens_out=done - done // 2,
            device_seconds=device_seconds(expected_s * progress, lease),
        )


class OpenAIBackend:
    """Forwards inference to the provider's own OpenAI-compatible server (vLLM, llama.cpp, Ollama).

    A job with an input file (OpenAI Batch JSONL) runs its own requests, `concurrency` at a time,
    and returns their results (workers.agent.batch). A job without one states only its workload in
    tokens, so it is a *load replay*:
    the workload_tokens are cut into requests of `chunk_tokens`, each a deterministic synthetic
    prompt of about half the chunk (one short word ≈ one token) asking for the other half as
    completion (`max_tokens`), with temperature 0. Usage is what the server says it did
    (`usage.prompt_tokens` / `usage.completion_tokens`); device-seconds are wall time × the lease's
    devices, within the allocation. Non-inference jobs fail with JOB_ERROR.

    Server answers: 4xx → JobError (the request, i.e. the job, is unacceptable to the model);
    unreachable or 5xx after `retries` → ProviderFault (the lease fails over).
    """

    name = "openai"
    simulated = False

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        chat: bool = False,
        chunk_tokens: int = 1024,
        timeout_s: float = 300.0,
        retries: int = 2,
        report_every_s: float = 1.0,
        concurrency: int = 4,
        clock=time.monotonic,
    ):
        self.client = None
        self.concurrency = concurrency
        self.batch_requests_sent = 0  # batch requests sent to the server (resumption skips the rest)
        self._count_lock = threading.Lock()
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        self.model = model
        self.chat = chat
        self.chunk_tokens = max(2, chunk_tokens)
        self.timeout_s = timeout_s
        self.retries = retries
        self.report_every_s = report_every_s
        self.clock = clock

    def bind(self, client) -> None:
        """The agent's API client: a batch job's input and results travel through it."""
        self.client = client

    def run(self, lease: dict, report: Report, stop: threading.Event) -> Usage:
        job = lease["job"]
        if job["kind"] == "INFERENCE" and job.get("input_file"):
            from workers.agent.batch import BatchRunner  # the batch runner builds on this module

            runner = BatchRunner(self, self.client, concurrency=self.concurrency)
            return runner.run(lease, stop)
        if job["kind"] != "INFERENCE":
            raise JobError("backend openai runs inference only")
        total = int(job.get("workload_tokens") or 0)
        if total <= 0:
            raise JobError("the job states no workload_tokens")
        chunk = min(self.chunk_tokens, max(2, int(job.get("context_length") or self.chunk_tokens)))
        devices = int(lease.get("devices") or 1)
        started = self.clock()
        last_report = started
        done = tokens_in = tokens_out = 0
        session = requests.Session()
        for index in range(math.ceil(total / chunk)):
            if stop.is_set():
                raise Stopped()
            size = min(chunk, total - done)
            prompt_words = max(1, size // 2)
            usage = self._complete(session, job, lease, index, prompt_words, max(1, size - prompt_words))
            tokens_in += int(usage.get("prompt_tokens") or 0)
            tokens_out += int(usage.get("completion_tokens") or 0)
            done += size
            now = self.clock()
            current = Usage(
                done / total, tokens_in, tokens_out, device_seconds((now - started) * devices, lease)
            )
            if done >= total:
                return current
            if now - last_report >= self.report_every_s:
                report(current)
                last_report = now
        return Usage(1.0, tokens_in, tokens_out, device_seconds((self.clock() - started) * devices, lease))

    def _complete(
        self, session, job: dict, lease: dict, index: int, prompt_words: int, max_tokens: int
    ) -> dict:
        prompt = load_replay_prompt(lease_id=lease["id"], job_id=job["id"], index=index, words=prompt_words)
        body = {"model": self.model or job["model_name"], "max_tokens": max_tokens, "temperature": 0}
        body["stream"] = False
        if self.chat:
            path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompt}]
        else:
            path, body["prompt"] = "/v1/completions", prompt
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt * 0.25, 5.0))
            try:
                response = session.post(self.url + path, json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as error:
                last = f"inference server unreachable: {type(error).__name__}"
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last = f"inference server answered HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise JobError(
                    f"inference server refused the request: HTTP {response.status_code} {response.text[:150]}"
                )
            try:
                return response.json().get("usage") or {}
            except ValueError:
                raise ProviderFault("inference server answered something other than JSON") from None
        raise ProviderFault(last)


def load_replay_prompt(*, lease_id: int, job_id: int, index: int, words: int) -> str:
    """A deterministic synthetic prompt of `words` short words (about one token each)."""
    vocabulary = ("edge", "power", "token", "model", "round", "price", "lease", "agent")
    head = f"CPX load replay job {job_id} lease {lease_id} part {index}:"
    filler = max(0, words - len(head.split()))
    body = " ".join(vocabulary[(index + i) % len(vocabulary)] for i in range(filler))
    return f"{head} {body}".strip()


def make_backend(name: str, *, openai_url: str | None = None, speedup: float = 600.0, **options):
    if name == "simulate":
        return SimulateBackend(speedup=speedup)
    if name == "openai":
        if not openai_url:
            raise ValueError("--openai-url is required with --backend openai")
        return OpenAIBackend(openai_url, **options)
    raise ValueError(f"unknown backend {name!r}")

"""Batch inference through leases: the provider's agent reads the job's input with its lease,
records results as it goes (each request once per job, usage checked), and the completing lease is
metered by the tokens its own results used; the job gets its output and error files.

Metering (stated rule): a request's usage is the `usage` block of the server's answer, accepted only
if 1 ≤ prompt_tokens ≤ its prompt bound (market.services.batch_input), else the upload is refused;
the completion tokens billed are min(completion_tokens, the request's max_tokens) (a count past
max_tokens is kept and shown, never billed). A lease is billed the device-hour equivalent of its tokens at the
rate its round priced the job:

    billable device-hours = expected_device_hours × (prompt + completion tokens) / workload_tokens

so the charge is unit_price_paid × that (device-hours to 1e-6 h, money to its quantum), never more
than the lease's allocation or the job's escrow. Requests that errored are delivered in the error
file and not billed. After a failover the finished requests are carried over; the lease that
completes the job is paid for the requests it ran, the failed lease for none (it pays its SLA
penalty instead), so no request is paid twice.
"""

import json
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum

from auctions.models import BatchResult, Lease
from auctions.services.verification import verification_maybe_open
from config.errors import Conflict, DomainError, InvalidInput, NotFound
from market.models import DataFile, JobRequest, Provider
from market.services.batch_input import BatchSummary
from market.services.files import FileTooLarge, batch_file_summary, file_store

MAX_RESULTS_PER_UPLOAD = 1000
SECONDS = Decimal("0.001")


class LeaseHasNoInput(NotFound):
    code = "lease_has_no_input"


class LeaseNotLive(DomainError):
    """Only the provider holding a live lease on a job reads its input or records its results."""

    code = "lease_not_live"
    status = 403


class UsageImplausible(DomainError):
    code = "usage_implausible"
    status = 422


class BatchIncomplete(Conflict):
    code = "batch_incomplete"


def _live_lease(*, provider: Provider, lease_id: int, statuses=Lease.ACTIVE, lock: bool = False) -> Lease:
    leases = Lease.objects.select_related("job", "job__input_file", "job__consumer")
    if lock:
        leases = leases.select_for_update(of=("self",))
    lease = leases.filter(pk=lease_id, provider=provider).first()
    if lease is None:
        raise NotFound("No such lease.", lease=lease_id)
    if lease.status not in statuses:
        raise LeaseNotLive(
            "The lease is not live: its input is no longer yours to read.",
            lease=lease_id,
            status=lease.status,
        )
    if lease.job.input_file is None:
        raise LeaseHasNoInput("The lease's job has no input file.", lease=lease_id)
    return lease


def lease_input_file(*, provider: Provider, lease_id: int) -> DataFile:
    """The input file of a live (DISPATCHED or RUNNING) lease of this provider.
    Raises NotFound (not its lease), LeaseNotLive, LeaseHasNoInput."""
    return _live_lease(provider=provider, lease_id=lease_id).job.input_file


def lease_batch_state(*, provider: Provider, lease_id: int) -> dict:
    """What the agent needs to (re)start a batch lease: the input file's id, sha256 and size, and the
    custom_ids already answered for the job (by this lease or one before it), and the max_tokens to
    send for a request that states none."""
    lease = _live_lease(provider=provider, lease_id=lease_id)
    data_file = lease.job.input_file
    done = list(
        BatchResult.objects.filter(job=lease.job).order_by("line").values_list("custom_id", flat=True)
    )
    return {
        "input_file": {
            "id": data_file.public_id,
            "sha256": data_file.sha256,
            "bytes": data_file.bytes,
            "lines": data_file.lines,
        },
        "done": done,
        "default_max_tokens": settings.CPX_BATCH_DEFAULT_MAX_TOKENS,
    }


def _result_row(item, *, summary: BatchSummary, index: dict, lease: Lease, now: datetime) -> BatchResult:
    if not isinstance(item, dict):
        raise InvalidInput("Each result is an object.", field="results")
    custom_id = item.get("custom_id")
    request = index.get(custom_id) if isinstance(custom_id, str) else None
    if request is None:
        raise InvalidInput(
            "A result names a custom_id that is not in the input.", custom_id=str(custom_id)[:64]
        )
    response, error = item.get("response"), item.get("error")
    if (response is None) == (error is None):
        raise InvalidInput("A result has either a response or an error.", custom_id=custom_id)
    row = BatchResult(job=lease.job, lease=lease, custom_id=custom_id, line=request.line, created_at=now)
    if error is not None:
        if not isinstance(error, dict):
            raise InvalidInput("error is an object {code, message}.", custom_id=custom_id)
        row.error = {
            "code": str(error.get("code", "error"))[:64],
            "message": str(error.get("message", ""))[:500],
        }
        return row
    if not isinstance(response, dict):
        raise InvalidInput("response is an object {status_code, body}.", custom_id=custom_id)
    status_code, body = response.get("status_code"), response.get("body")
    if isinstance(status_code, bool) or not isinstance(status_code, int) or not 100 <= status_code <= 599:
        raise InvalidInput("response.status_code is an HTTP status.", custom_id=custom_id)
    row.status_code, row.body = status_code, body
    row.request_id = str(response.get("request_id") or "")[:100]
    if status_code != 200:
        return row
    usage = body.get("usage") if isinstance(body, dict) else None
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (prompt, completion)):
        raise UsageImplausible("A result has no usage block with whole token counts.", custom_id=custom_id)
    if not 1 <= prompt <= request.prompt_bound:
        raise UsageImplausible(
            f"Request {custom_id}: {prompt} prompt tokens, outside 1..{request.prompt_bound} for its input.",
            custom_id=custom_id,
            prompt_tokens=prompt,
            prompt_bound=request.prompt_bound,
        )
    # Billed completion tokens never exceed max_tokens. A server may report more: llama.cpp's keeps
    # generating past max_tokens while the text ends inside a UTF-8 character. That is kept (in the
    # body and `reported_completion_tokens`, summed on the job) but never billed.
    row.prompt_tokens, row.completion_tokens = prompt, min(completion, request.max_tokens)
    row.reported_completion_tokens = completion
    return row


@transaction.atomic
def lease_batch_record(*, provider: Provider, lease_id: int, results: list, now: datetime) -> dict:
    """Record answered requests of a RUNNING batch lease (OpenAI Batch output lines); also a heartbeat
    of the lease. A request already answered for the job (a retry, or work carried over) is kept as it
    was and counted in `duplicates`. One implausible usage refuses the whole upload (nothing recorded).

    Returns {"recorded", "duplicates", "done", "lines"}. Raises NotFound, LeaseNotLive, LeaseHasNoInput,
    InvalidInput, UsageImplausible.
    """
    if not isinstance(results, list) or len(results) > MAX_RESULTS_PER_UPLOAD:
        raise InvalidInput(f"results is a list of at most {MAX_RESULTS_PER_UPLOAD}.", field="results")
    # The lease row locked first (the lease services' lock order): uploads of one lease take turns.
    lease = _live_lease(provider=provider, lease_id=lease_id, statuses=(Lease.Status.RUNNING,), lock=True)
    summary = batch_file_summary(data_file=lease.job.input_file)
    index = summary.by_custom_id()
    rows = {}
    for item in results:
        row = _result_row(item, summary=summary, index=index, lease=lease, now=now)
        rows.setdefault(row.custom_id, row)
    taken = set(
        BatchResult.objects.filter(job=lease.job, custom_id__in=list(rows)).values_list(
            "custom_id", flat=True
        )
    )
    fresh = [row for custom_id, row in rows.items() if custom_id not in taken]
    BatchResult.objects.bulk_create(fresh)
    done = _refresh_totals(lease=lease, lines=summary.lines, now=now)
    return {
        "recorded": len(fresh),
        "duplicates": len(results) - len(fresh),
        "done": done,
        "lines": summary.lines,
    }


def _sums(queryset) -> dict:
    return queryset.aggregate(
        requests=Count("id"),
        failed=Count("id", filter=~Q(status_code=200) | Q(error__isnull=False)),
        prompt_tokens=Sum("prompt_tokens", default=0),
        completion_tokens=Sum("completion_tokens", default=0),
        completion_tokens_reported=Sum("reported_completion_tokens", default=0),
    )


def _refresh_totals(*, lease: Lease, lines: int, now: datetime) -> int:
    job_sums = _sums(BatchResult.objects.filter(job=lease.job))
    mine = _sums(BatchResult.objects.filter(lease=lease))
    JobRequest.objects.filter(pk=lease.job_id).update(
        batch_totals={**job_sums, "lines": lines, "succeeded": job_sums["requests"] - job_sums["failed"]}
    )
    Lease.objects.filter(pk=lease.pk, status=Lease.Status.RUNNING).update(
        progress=min(1.0, job_sums["requests"] / lines) if lines else 1.0,
        tokens_in=mine["prompt_tokens"],
        tokens_out=mine["completion_tokens"],
        last_heartbeat_at=now,
    )
    return job_sums["requests"]


def lease_batch_metered(lease: Lease) -> tuple[int, int, Decimal]:
    """The lease's (prompt tokens, completion tokens, billable device-seconds) by its own results."""
    mine = _sums(BatchResult.objects.filter(lease=lease))
    tokens = mine["prompt_tokens"] + mine["completion_tokens"]
    workload = lease.job.workload_tokens or 1
    billable = (lease.expected_device_hours * 3600 * tokens / workload).quantize(SECONDS, rounding=ROUND_DOWN)
    return mine["prompt_tokens"], mine["completion_tokens"], min(billable, lease.max_device_hours * 3600)


def lease_batch_close(*, lease: Lease, now: datetime) -> tuple[int, int, Decimal]:
    """At completion of a batch lease: every request of the input is answered (else BatchIncomplete);
    write the job's output and error files (OpenAI Batch output format, input order) for its
    consumer; return the lease's metered usage (`lease_batch_metered`)."""
    job = lease.job
    lines = job.input_file.lines
    answered = BatchResult.objects.filter(job=job).count()
    if answered < lines:
        raise BatchIncomplete(
            f"{answered} of {lines} requests are answered: upload the rest before completing.",
            lease=lease.pk,
            answered=answered,
            lines=lines,
        )
    output, errors = [], []
    for row in BatchResult.objects.filter(job=job).order_by("line").iterator(chunk_size=2000):
        line = {
            "id": f"batch_req_{row.pk}",
            "custom_id": row.custom_id,
            "response": None
            if row.error is not None
            else {"status_code": row.status_code, "request_id": row.request_id, "body": row.body},
            "error": row.error,
        }
        (output if row.succeeded else errors).append(json.dumps(line, separators=(",", ":")) + "\n")
    stem = f"job-{job.pk}"
    output_file = file_store(
        owner=job.consumer,
        purpose=DataFile.Purpose.BATCH_OUTPUT,
        filename=f"{stem}-output.jsonl",
        data="".join(output).encode(),
        now=now,
    )
    error_file = file_store(
        owner=job.consumer,
        purpose=DataFile.Purpose.BATCH_ERRORS,
        filename=f"{stem}-errors.jsonl",
        data="".join(errors).encode(),
        now=now,
    )
    JobRequest.objects.filter(pk=job.pk).update(output_file=output_file, error_file=error_file)
    verification_maybe_open(lease=lease, now=now)
    return lease_batch_metered(lease)


@transaction.atomic
def lease_artifact_store(
    *, provider: Provider, lease_id: int, data: bytes, filename: str, now: datetime
) -> DataFile:
    """Keep the opaque artifact (e.g. a LoRA adapter) a training or fine-tuning lease produced as
    its job's output file, owned by the consumer; a second upload replaces the first. Only the
    provider of a RUNNING lease may; at most CPX_FILE_MAX_BYTES. Raises NotFound, LeaseNotLive,
    FileTooLarge, InvalidInput (an inference job's output is its batch results, or no bytes)."""
    lease = Lease.objects.select_for_update(of=("self",)).select_related("job", "job__consumer")
    lease = lease.filter(pk=lease_id, provider=provider).first()
    if lease is None:
        raise NotFound("No such lease.", lease=lease_id)
    if lease.status != Lease.Status.RUNNING:
        raise LeaseNotLive("Only a running lease stores an artifact.", lease=lease_id, status=lease.status)
    if lease.job.kind == JobRequest.Kind.INFERENCE:
        raise InvalidInput("An inference job returns its results, not an artifact.", lease=lease_id)
    if len(data) > settings.CPX_FILE_MAX_BYTES:
        raise FileTooLarge(
            f"A file is at most {settings.CPX_FILE_MAX_BYTES} bytes.", max_bytes=settings.CPX_FILE_MAX_BYTES
        )
    if not data:
        raise InvalidInput("The artifact is empty.", field="body")
    name = (filename or f"job-{lease.job_id}-artifact.bin").replace("/", "_")[:255]
    artifact = file_store(
        owner=lease.job.consumer, purpose=DataFile.Purpose.ARTIFACT, filename=name, data=data, now=now
    )
    JobRequest.objects.filter(pk=lease.job_id).update(output_file=artifact)
    return artifact

"""Consumer pages: submit a job (with the quote shown first), watch it, see balance and ledger."""

import uuid
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auctions.models import Lease
from auctions.selectors import leases as lease_selectors
from auctions.selectors import market as market_selectors
from auctions.services.pricing import job_quote
from config.errors import DomainError, NotFound
from market import selectors
from market.forms import JobFilterForm, JobForm
from market.models import LedgerTransfer
from market.services.jobs import job_request_cancel, job_request_submit
from market.units import per_reference_device_hour
from market.views.common import TERMINAL_JOB_STATUSES, consumer_required, is_htmx, now

JOBS_PER_PAGE = 25
TRANSFERS_PER_PAGE = 50
CHARGED = (LedgerTransfer.Kind.PAYMENT, LedgerTransfer.Kind.FEE)
RETURNED = (LedgerTransfer.Kind.REFUND, LedgerTransfer.Kind.RELEASE)


def _balance(user) -> dict:
    balance = selectors.balance_get(user=user)
    balance["low"] = balance["available"] < settings.CPX_LOW_BALANCE
    balance["threshold"] = settings.CPX_LOW_BALANCE
    return balance


def _job_page(request) -> dict:
    """The page of the consumer's jobs the filters select, with what each spent and where it ran."""
    filters = JobFilterForm(request.GET)
    chosen = filters.filters()
    jobs = selectors.job_request_list(consumer=request.user, with_outcome=True).filter(**chosen)
    page = Paginator(jobs, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    for job in page.object_list:
        job.ran_where = selectors.job_ran_where(job)
    return {
        "page": page,
        "filters": filters,
        "query": urlencode(chosen),
        "moving": any(job.status not in TERMINAL_JOB_STATUSES for job in page.object_list),
    }


@consumer_required
def job_list(request):
    context = {**_job_page(request), "balance": _balance(request.user)}
    return render(request, "consumer/job_list.html", context)


@consumer_required
def job_list_live(request):
    """The job table's rows, polled every 2 s while any job on the page is still moving."""
    return render(request, "consumer/_job_rows.html", _job_page(request))


def _idempotency_key(raw: str | None) -> str | None:
    # The form carries a fresh key per page view: a double-clicked or retried submit is one job.
    if raw and 1 <= len(raw) <= 128 and raw.isascii() and raw.isprintable():
        return raw
    return None


def _job_defaults() -> dict:
    return {
        "kind": "INFERENCE",
        "quant_bits": "4",
        "context_length": "4096",
        "batch_size": "1",
        "device_class": "GPU",
        "deadline": (now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    }


@consumer_required
def job_new(request):
    form = JobForm(request.POST or None, initial=_job_defaults())
    key = _idempotency_key(request.POST.get("idempotency_key")) or str(uuid.uuid4())
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                job, created = job_request_submit(
                    consumer=request.user, spec=form.validated_data, now=now(), idempotency_key=key
                )
            except DomainError as error:
                form.add_domain_error(error)
            else:
                if created:
                    messages.success(request, f"Job {job.pk} is queued: it clears in the next round it can.")
                return redirect("pages:job-detail", pk=job.pk)
        status = 400
    context = {"form": form, "idempotency_key": key, "balance": _balance(request.user)}
    return render(request, "consumer/job_form.html", context, status=status)


@consumer_required
@require_POST
def job_quote_partial(request):
    """The quote for the form as it stands (htmx): the expected price, or why it would not clear
    and what would — from the pricing service, for exactly what a submit would send."""
    form = JobForm(request.POST)
    context = {"form": form, "quote": None, "error": None, **form.unfinished()}
    if form.is_valid():
        try:
            quote = job_quote(spec=form.validated_data, now=now())
        except DomainError as error:
            context["error"] = error.message
        else:
            context["quote"] = {
                **quote,
                "reason_text": (quote["reason"] or "").replace("_", " "),
                "history": market_selectors.quote_history(
                    quote=quote, bid=form.validated_data["max_price_per_device_hour"]
                ),
            }
    return render(request, "consumer/_quote.html", context)


def _own_job(request, pk: int):
    job = lease_selectors.job_for_consumer(consumer=request.user, job_id=pk)
    if job is None:
        raise Http404("No such job.")  # another consumer's answers the same
    return job


def _job_context(request, job) -> dict:
    leases = list(lease_selectors.lease_list_for_job(job=job))
    transfers = list(selectors.ledger_transfer_list(user=request.user).filter(job=job))
    charged = sum((t.amount for t in transfers if t.kind in CHARGED), Decimal(0))
    returned = sum((t.amount for t in transfers if t.kind in RETURNED), Decimal(0))
    return {
        "job": job,
        "leases": leases,
        "transfers": transfers,
        "timeline": _timeline(job, leases),
        "usage": {
            "tokens_in": sum(lease.tokens_in for lease in leases),
            "tokens_out": sum(lease.tokens_out for lease in leases),
            "device_seconds": sum((lease.device_seconds for lease in leases), Decimal(0)),
            "progress": leases[-1].progress if leases else 0,
        },
        "cost": {"held": job.budget, "charged": charged, "returned": returned},
        "terminal": job.status in TERMINAL_JOB_STATUSES,
    }


def _timeline(job, leases: list[Lease]) -> list[dict]:
    """Submitted → matched → running → completed/failed, with each lease's end and reason.

    Steps are what happened, in order; a step not reached yet is listed as pending."""
    steps = [
        {"label": "Submitted", "at": job.created_at, "state": "done", "detail": f"{job.get_kind_display()}"}
    ]
    for number, lease in enumerate(leases, start=1):
        where = f"{lease.devices}× {lease.resource.model_name} of {lease.provider.display_name}"
        per_reference = per_reference_device_hour(lease.unit_price_paid, lease.resource.speed_factor)
        speed = lease.resource.speed_factor.normalize()
        price = (
            f"{per_reference:.4f} {settings.CPX_CURRENCY} per reference device-hour "
            f"({lease.unit_price_paid:.4f} per device-hour of this {speed:f}× device)"
        )
        steps.append(
            {
                "label": "Matched" if number == 1 else f"Matched again (attempt {number})",
                "at": lease.dispatched_at,
                "state": "done",
                "detail": f"round {lease.round_id}: {where} at {price}",
            }
        )
        if lease.accepted_at:
            steps.append({"label": "Running", "at": lease.accepted_at, "state": "done", "detail": where})
        if lease.ended_at and lease.status != Lease.Status.COMPLETED:
            reason = lease.get_close_reason_display() or lease.status.title()
            detail = f"{reason}" + (f": {lease.close_detail}" if lease.close_detail else "")
            label = "Reassigned" if lease.status == Lease.Status.REASSIGNED else "Lease failed"
            steps.append({"label": label, "at": lease.ended_at, "state": "fault", "detail": detail})
    final = {
        "COMPLETED": ("Completed", "done"),
        "FAILED": ("Failed", "fault"),
        "CANCELLED": ("Cancelled", "fault"),
        "EXPIRED": ("Expired", "fault"),
    }.get(job.status)
    if final is not None:
        last = leases[-1] if leases else None
        at = last.ended_at if last is not None and last.ended_at else job.updated_at
        reason = (
            job.close_reason.replace("_", " ").lower() if job.close_reason not in ("", "COMPLETED") else ""
        )
        steps.append({"label": final[0], "at": at, "state": final[1], "detail": reason})
    else:
        reached = {step["label"].split(" ")[0] for step in steps}
        for label in ("Matched", "Running", "Completed"):
            if label not in reached:
                steps.append({"label": label, "at": None, "state": "pending", "detail": ""})
    return steps


@consumer_required
def job_detail(request, pk: int):
    job = _own_job(request, pk)
    return render(request, "consumer/job_detail.html", _job_context(request, job))


@consumer_required
def job_live(request, pk: int):
    """The moving part of a job's page (htmx, every 2 s until the job ends)."""
    job = _own_job(request, pk)
    return render(request, "consumer/_job_live.html", _job_context(request, job))


@consumer_required
@require_POST
def job_cancel(request, pk: int):
    try:
        job = job_request_cancel(consumer=request.user, job_id=pk, now=now())
    except NotFound:
        raise Http404("No such job.") from None
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Job {job.pk} is cancelled; its escrow is back in your balance.")
    if is_htmx(request):
        return render(request, "consumer/_job_live.html", _job_context(request, _own_job(request, pk)))
    return redirect("pages:job-detail", pk=pk)


@consumer_required
def balance(request):
    """Balance and ledger, the deposit wallet (`user.chain_wallet`, read in the template) and a link
    to add funds (contracts.funds: register the wallet, where deposits go)."""
    transfers = selectors.ledger_transfer_list(user=request.user)
    page = Paginator(transfers, TRANSFERS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "consumer/balance.html", {"balance": _balance(request.user), "page": page})

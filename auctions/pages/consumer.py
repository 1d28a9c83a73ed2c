"""Consumer pages that show auctions data: a job's page (its leases, timeline, cost), its cancel,
and the submit form's quote. The job list, the form and the balance are `market.views.consumer`."""

from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auctions.models import Lease
from auctions.selectors import leases as lease_selectors
from auctions.selectors import market as market_selectors
from auctions.selectors.backup_pool import standby_list_for_job
from auctions.services.jobs import job_request_cancel
from auctions.services.pricing import job_quote
from config.errors import DomainError, NotFound
from contracts.services import settlement_path
from market import selectors
from market.forms import JobForm
from market.models import LedgerTransfer
from market.units import per_reference_device_hour
from market.views.common import TERMINAL_JOB_STATUSES, consumer_required, is_htmx, now

CHARGED = (LedgerTransfer.Kind.PAYMENT, LedgerTransfer.Kind.FEE)
RETURNED = (LedgerTransfer.Kind.REFUND, LedgerTransfer.Kind.RELEASE)


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
    # The backup pool (docs/fusionai.md): read only for a job that can hold a standby.
    wants_standby = job.standby or settings.CPX_BACKUP_POOL_POLICY == "all"
    standbys = list(standby_list_for_job(job=job)) if wants_standby else []
    transfers = list(selectors.ledger_transfer_list(user=request.user).filter(job=job))
    charged = sum((t.amount for t in transfers if t.kind in CHARGED), Decimal(0))
    returned = sum((t.amount for t in transfers if t.kind in RETURNED), Decimal(0))
    return {
        "job": job,
        "leases": leases,
        "transfers": transfers,
        "timeline": _timeline(job, leases, takeovers={s.takeover_id for s in standbys if s.takeover_id}),
        "standby": standbys[-1] if standbys else None,
        "usage": {
            "tokens_in": sum(lease.tokens_in for lease in leases),
            "tokens_out": sum(lease.tokens_out for lease in leases),
            "device_seconds": sum((lease.device_seconds for lease in leases), Decimal(0)),
            "progress": leases[-1].progress if leases else 0,
        },
        "cost": {"held": job.budget, "charged": charged, "returned": returned},
        "terminal": job.status in TERMINAL_JOB_STATUSES,
    }


def _matched_label(number: int, *, standby: bool) -> str:
    if standby:
        return "Restarted on its standby"  # the backup pool's lease, written at the failover
    return "Matched" if number == 1 else f"Matched again (attempt {number})"


def _timeline(job, leases: list[Lease], takeovers: frozenset = frozenset()) -> list[dict]:
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
                "label": _matched_label(number, standby=lease.pk in takeovers),
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
    context = _job_context(request, job) | {"settlement_path": settlement_path(job)}
    return render(request, "consumer/job_detail.html", context)


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

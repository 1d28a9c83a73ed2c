"""Consumer pages of market data: the job list, the submit form, balance and ledger.

A job's own page (with its leases), its cancel and the form's quote show auctions data and live in
`auctions.pages.consumer`, under the same URL names.
"""

import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render

from config.errors import DomainError
from market import selectors
from market.forms import JobWithFileForm
from market.services.jobs import job_request_submit, job_request_submit_with_upload
from market.views.common import TERMINAL_JOB_STATUSES, consumer_required, now

JOBS_PER_PAGE = 25
TRANSFERS_PER_PAGE = 50


def _balance(user) -> dict:
    balance = selectors.balance_get(user=user)
    balance["low"] = balance["available"] < settings.CPX_LOW_BALANCE
    balance["threshold"] = settings.CPX_LOW_BALANCE
    return balance


def _job_page(request):
    jobs = selectors.job_request_list(consumer=request.user)
    return Paginator(jobs, JOBS_PER_PAGE).get_page(request.GET.get("page"))


@consumer_required
def job_list(request):
    page = _job_page(request)
    context = {"page": page, "balance": _balance(request.user), **_rows_context(page)}
    return render(request, "consumer/job_list.html", context)


@consumer_required
def job_list_live(request):
    """The job table's rows, polled every 2 s while any job on the page is still moving."""
    page = _job_page(request)
    return render(request, "consumer/_job_rows.html", {"page": page, **_rows_context(page)})


def _rows_context(page) -> dict:
    return {"moving": any(job.status not in TERMINAL_JOB_STATUSES for job in page.object_list)}


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
    form = JobWithFileForm(request.POST or None, files=request.FILES or None, initial=_job_defaults())
    key = _idempotency_key(request.POST.get("idempotency_key")) or str(uuid.uuid4())
    status = 200
    if request.method == "POST":
        if form.is_valid():
            upload = form.cleaned_data.get("input_file")
            submit = partial(job_request_submit_with_upload, upload=upload) if upload else job_request_submit
            try:
                job, created = submit(
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
def balance(request):
    transfers = selectors.ledger_transfer_list(user=request.user)
    page = Paginator(transfers, TRANSFERS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "consumer/balance.html", {"balance": _balance(request.user), "page": page})

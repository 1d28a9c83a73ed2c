"""Operator pages of on-chain settlement (under /ops/settlements/), in the pattern of auctions.views:
reads through `contracts.selectors` (a fixed number of queries whatever the number of batches), a
server-side SVG chart with its numbers beside it, and actions as POST forms with the CSRF token that
call one service and show its answer.

- the dashboard: batches by status, leases by reconciliation status, what waits to be batched,
  deposits, gas per settled lease per batch (chart + table), open reconciliation issues, the batch list;
- a batch: its key, root, tx hash, gas, attempts and error; per lease the ledger beside the chain
  (differences highlighted); its issues; and "retry" for a FAILED batch.
"""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from config.errors import DomainError
from contracts import selectors
from contracts.models import SettlementBatch
from contracts.services import from_wei, lease_ledger_amounts, settlement_batch_retry
from market.views.charts import Series, line_chart
from market.views.common import now, operator_required

BATCHES_PER_PAGE = 30
CHARTED_BATCHES = 50
LEASES_SHOWN = 1000
BADGES = {
    "PENDING": "warn",
    "SUBMITTED": "warn",
    "CONFIRMED": "ok",
    "FAILED": "bad",
    "MATCHED": "ok",
    "UNCHECKED": "",
    "MISSING_ON_CHAIN": "bad",
    "AMOUNT_MISMATCH": "bad",
}


def _gas_chart(batches: list[SettlementBatch]) -> dict:
    points = [(b.pk, b.gas_used / b.lease_count) for b in batches if b.gas_used and b.lease_count]
    return {
        "svg": line_chart(
            [Series("gas per lease", points)],
            title="Gas per settled lease, per batch",
            description=f"commitBatch gas / leases in the batch, last {len(points)} confirmed batches.",
            x_label="batch",
            y_unit="gas per lease",
        ),
        "rows": [
            [b.pk, b.lease_count, b.gas_used, round(b.gas_used / b.lease_count)]
            for b in batches[::-1]
            if b.gas_used
        ][:15],
    }


@operator_required
def settlements(request):
    status = request.GET.get("status") or ""
    if status and status not in SettlementBatch.Status.values:
        status = ""
    page = Paginator(selectors.batch_list(status=status or None), BATCHES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    confirmed = list(
        selectors.batch_list(status=SettlementBatch.Status.CONFIRMED).order_by("-id")[:CHARTED_BATCHES]
    )[::-1]
    for batch in page.object_list:
        batch.badge = BADGES.get(batch.status, "")
    return render(
        request,
        "contracts/settlements.html",
        {
            "overview": selectors.settlement_overview(),
            "page": page,
            "status": status,
            "statuses": SettlementBatch.Status.values,
            "chart": _gas_chart(confirmed),
            "issues": selectors.open_issues(limit=20),
        },
    )


def _lease_rows(batch: SettlementBatch) -> list[dict]:
    """Per lease: the ledger now beside what the batch committed on chain."""
    leases = list(selectors.batch_leases(batch=batch)[:LEASES_SHOWN])
    ledger = lease_ledger_amounts([row.lease_id for row in leases])
    rows = []
    for row in leases:
        payment, fee = ledger[row.lease_id]
        chain_payment, chain_fee = from_wei(int(row.provider_wei))[0], from_wei(int(row.fee_wei))[0]
        rows.append(
            {
                "row": row,
                "ledger_payment": payment,
                "ledger_fee": fee,
                "chain_payment": chain_payment,
                "chain_fee": chain_fee,
                "payment_differs": payment != chain_payment,
                "fee_differs": fee != chain_fee,
                "badge": BADGES.get(row.recon_status, ""),
            }
        )
    return rows


@operator_required
def settlement_detail(request, pk: int):
    batch = selectors.batch_get(batch_id=pk)
    if batch is None:
        raise Http404("No such settlement batch.")
    batch.badge = BADGES.get(batch.status, "")
    rows = _lease_rows(batch)
    return render(
        request,
        "contracts/settlement_detail.html",
        {
            "batch": batch,
            "rows": rows,
            "truncated": batch.lease_count > len(rows),
            "differing": sum(
                1 for r in rows if r["row"].recon_status in ("MISSING_ON_CHAIN", "AMOUNT_MISMATCH")
            ),
            "issues": list(selectors.batch_issues(batch=batch)),
            "gas_per_lease": (batch.gas_used / batch.lease_count) if batch.gas_used else None,
        },
    )


@operator_required
@require_POST
def settlement_retry(request, pk: int):
    """Retry a FAILED batch: back to PENDING (same key and leaves) and sent by the worker."""
    try:
        batch = settlement_batch_retry(batch_id=pk, now=now())
    except DomainError as error:
        if error.status == 404:
            raise Http404("No such settlement batch.") from None
        messages.error(request, error.message)
        return redirect("ops:settlement-detail", pk=pk)
    from workers.tasks import submit_batch  # pages enqueue; services never import tasks

    submit_batch.delay_on_commit(batch_id=batch.pk)
    messages.success(request, f"Batch #{batch.pk} is pending again: the worker sends it now.")
    return redirect("ops:settlement-detail", pk=pk)

"""Operator pages: the market dashboard (rounds over time as charts with their numbers, the book's
depth, provider health), rounds and a round's detail with its replay. The settlement dashboard
(issue 5) lives in contracts/views.py under the same navigation (`ops:settlements`).

Dashboard pattern (the settlement dashboard follows it):
- reads come from a selector module (`auctions/selectors/dashboard.py` here), a fixed number of
  queries whatever the size of the market — the page tests assert the count at two sizes;
- a chart is server-side SVG (`market.views.charts`), always with its numbers: a table of the
  latest points under it and a CSV of the whole window (`…/<series>.csv`);
- what moves is a partial (`templates/ops/_*.html`) that htmx polls every 2 s;
- actions are POST forms with the CSRF token that call one service and render its answer.
"""

import csv
import json

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from auctions.selectors import dashboard
from auctions.selectors import leases as lease_selectors
from auctions.selectors import rounds as selectors
from auctions.selectors import tiers as tier_selectors
from auctions.services.rounds import RoundNotFound, round_replay
from market.broker_selectors import broker_summary
from market.views.charts import Series, legend, line_chart
from market.views.common import now, operator_required

DEFAULT_WINDOW = 200
MAX_WINDOW = 5000
WINDOWS = (50, 200, 1000)
TABLE_ROWS = 30
PRICE_CLASSES_CHARTED = 6
ROUNDS_PER_PAGE = 50
ALLOCATIONS_SHOWN = 500
SERIES = ("prices", "volume", "welfare", "gap", "clear-time")


def _window(request) -> int:
    try:
        window = int(request.GET.get("rounds", DEFAULT_WINDOW))
    except ValueError:
        window = DEFAULT_WINDOW
    return max(10, min(MAX_WINDOW, window))


def _clear_ms(row: dict) -> float | None:
    timings = row.get("timings_ms") or {}
    return round(sum(timings.values()), 3) if timings else None


def _price_classes(rows: list[dict]) -> list[str]:
    """Classes by units traded over the window, most first (the busiest are charted)."""
    traded: dict[str, float] = {}
    for row in rows:
        for key, price in (row["prices"] or {}).items():
            if price.get("buyer_price") is not None:  # a class that never priced has nothing to draw
                traded[key] = traded.get(key, 0) + (price.get("traded") or 0)
    return sorted(traded, key=lambda key: (-traded[key], key))


def _charts(rows: list[dict], window: int) -> list[dict]:
    classes = _price_classes(rows)
    charted = classes[:PRICE_CLASSES_CHARTED]
    price_series = [Series(key, [(row["id"], _buyer_price(row, key)) for row in rows]) for key in charted]
    recent = rows[-TABLE_ROWS:][::-1]
    simple = {
        "volume": (
            "Jobs matched per round",
            "jobs matched",
            lambda row: row["jobs_matched"],
            "Leases the round created.",
        ),
        "welfare": (
            "Welfare per round",
            f"welfare, {settings.CPX_CURRENCY} per hour",
            lambda row: row["welfare"],
            "Bids minus asks of the trades.",
        ),
        "gap": (
            "Optimality gap per round",
            "gap (share of the LP bound)",
            lambda row: row["optimality_gap"],
            "Between the welfare and the LP bound; 0 is optimal.",
        ),
        "clear-time": ("Time to clear per round, ms", "ms", _clear_ms, "Snapshot + engine + write."),
    }
    charts = [
        {
            "slug": "prices",
            "title": "Clearing price per class",
            "svg": line_chart(
                price_series,
                title="Clearing price per resource class",
                description=f"Buyer price per device-hour of the {len(charted)} busiest classes over "
                f"{len(rows)} rounds.",
                y_unit=f"{settings.CPX_CURRENCY} per device-hour",
                bridge_gaps=True,
            ),
            "legend": legend(charted),
            "note": "Buyer price per device-hour in the rounds where the class priced."
            + (
                f" {len(classes) - len(charted)} quieter classes are in the CSV."
                if len(classes) > len(charted)
                else ""
            ),
            "columns": ["round", *charted],
            "rows": [[row["id"], *(_buyer_price(row, key) for key in charted)] for row in recent],
        }
    ]
    for slug, (title, unit, value, note) in simple.items():
        charts.append(
            {
                "slug": slug,
                "title": title,
                "svg": line_chart(
                    [Series(unit, [(row["id"], value(row)) for row in rows])],
                    title=title,
                    description=f"{title} over {len(rows)} rounds.",
                    y_unit=unit,
                ),
                "legend": [],
                "note": note,
                "columns": ["round", unit],
                "rows": [[row["id"], value(row)] for row in recent],
            }
        )
    for chart in charts:
        chart["csv_query"] = f"rounds={window}"
    return charts


def _buyer_price(row: dict, key: str):
    price = (row["prices"] or {}).get(key)
    return None if price is None else price.get("buyer_price")


def _live_context() -> dict:
    current_time = now()
    return {
        "latest_rounds": list(selectors.round_list()[:8]),
        "totals": dashboard.round_totals(),
        "depth": dashboard.book_depth(now=current_time),
        "providers": list(dashboard.provider_health(now=current_time)),
        "verifications": list(lease_selectors.verification_list()[:8]),  # spot checks (issue 10)
        "brokers": broker_summary(),  # the broker tier (issue 12)
    }


@operator_required
def market(request):
    window = _window(request)
    rows = dashboard.round_series(limit=window)
    context = {
        "window": window,
        "windows": WINDOWS,
        "rounds_charted": len(rows),
        "charts": _charts(rows, window),
        "table_rows": TABLE_ROWS,
        "tiers": tier_selectors.market_tiers(),
        **_live_context(),
    }
    return render(request, "ops/market.html", context)


@operator_required
def market_live(request):
    """The moving part of the dashboard (htmx, every 2 s): latest rounds, the book, providers."""
    return render(request, "ops/_market_live.html", _live_context())


@operator_required
def market_csv(request, series: str):
    """One chart's numbers over the window as CSV (all classes for prices, long format)."""
    if series not in SERIES:
        raise Http404("No such series.")
    window = _window(request)
    rows = dashboard.round_series(limit=window)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="cpx-{series}-{window}-rounds.csv"'
    writer = csv.writer(response)
    if series == "prices":
        writer.writerow(["round", "cleared_at", "resource_class", "buyer_price", "seller_price", "traded"])
        for row in rows:
            for key, price in sorted((row["prices"] or {}).items()):
                writer.writerow(
                    [
                        row["id"],
                        _iso(row["cleared_at"]),
                        key,
                        price.get("buyer_price"),
                        price.get("seller_price"),
                        price.get("traded"),
                    ]
                )
        return response
    column, value = {
        "volume": ("jobs_matched", lambda row: row["jobs_matched"]),
        "welfare": ("welfare", lambda row: row["welfare"]),
        "gap": ("optimality_gap", lambda row: row["optimality_gap"]),
        "clear-time": ("clear_ms", _clear_ms),
    }[series]
    writer.writerow(["round", "cleared_at", "status", column])
    for row in rows:
        writer.writerow([row["id"], _iso(row["cleared_at"]), row["status"], _blank(value(row))])
    return response


def _iso(value) -> str:
    return value.isoformat() if value is not None else ""


def _blank(value):
    return "" if value is None else value


@operator_required
def round_list(request):
    page = Paginator(selectors.round_list(), ROUNDS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "ops/round_list.html", {"page": page})


def _round_context(pk: int) -> dict:
    round_obj = selectors.round_get(round_id=pk)
    if round_obj is None:
        raise Http404("No such round.")
    allocations = list(dashboard.round_allocations(round_obj=round_obj)[: ALLOCATIONS_SHOWN + 1])
    return {
        "round": round_obj,
        "mechanism_json": json.dumps(round_obj.mechanism, indent=2, sort_keys=True),
        "prices": sorted((round_obj.prices or {}).items()),
        "summary": selectors.round_lease_summary(round_obj=round_obj),
        "allocations": allocations[:ALLOCATIONS_SHOWN],
        "allocations_truncated": len(allocations) > ALLOCATIONS_SHOWN,
        "snapshot_bytes": len(round_obj.snapshot.encode("utf-8")) if round_obj.snapshot else 0,
        "clear_ms": _clear_ms({"timings_ms": round_obj.timings_ms}),
        "replay": None,
    }


@operator_required
def round_detail(request, pk: int):
    return render(request, "ops/round_detail.html", _round_context(pk))


@operator_required
@require_POST
def round_replay_view(request, pk: int):
    """Re-run the round from its stored snapshot (round_replay) and show both hashes side by side."""
    try:
        report = round_replay(round_id=pk)
    except RoundNotFound:
        raise Http404("No such round.") from None
    context = {**_round_context(pk), "replay": report}
    template = "ops/_replay.html" if request.headers.get("HX-Request") == "true" else "ops/round_detail.html"
    return render(request, template, context)

"""The public market pages, under /market/: the offers and recent clearing prices for anyone (no
login), and each cleared round — its hashes, downloads and a replay button — for any signed-in
user. Thin: one selector or service call per view (auctions/selectors/market.py,
auctions/services/replays.py, auctions/services/rounds.py)."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_POST

from auctions.selectors import market as market_selectors
from auctions.selectors import rounds as selectors
from auctions.selectors import tiers as tier_selectors
from auctions.services.rounds import RoundNotFound, round_replay
from contracts.selectors import round_commitment_document
from market.views.common import now

app_name = "public"
ROUNDS_LISTED = 20


def market(request):
    """Offers per class and recent clearing prices; no login needed."""
    context = {
        "classes": market_selectors.market_offers(
            now=now(),
            heartbeat_timeout_s=settings.CPX_HEARTBEAT_TIMEOUT_S,
            include_unseen=settings.CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS,
        ),
        "recent": market_selectors.market_recent_prices(),
        "rounds": list(selectors.round_list(status="CLEARED")[:ROUNDS_LISTED]),
        "tiers": tier_selectors.market_tiers(),
    }
    return render(request, "market/index.html", context)


def _signed_in(view):
    def checked(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    checked.__name__ = view.__name__
    checked.__doc__ = view.__doc__
    return checked


def _round(pk: int):
    round_obj = selectors.round_get(round_id=pk)
    if round_obj is None:
        raise Http404("No such round.")
    return round_obj


@_signed_in
def round_page(request, pk: int):
    """A round's hashes, figures, downloads and replay: any signed-in user."""
    commitment = round_commitment_document(round_id=pk)
    context = {"round": _round(pk), "replay": None, "chain_commitment": commitment}
    return render(request, "market/round.html", context)


@_signed_in
@require_POST
def round_replay_page(request, pk: int):
    """Replay the round from its stored snapshot and show both hashes (htmx swaps the report in)."""
    try:
        report = round_replay(round_id=pk)
    except RoundNotFound:
        raise Http404("No such round.") from None
    commitment = round_commitment_document(round_id=pk)
    context = {"round": _round(pk), "replay": report, "chain_commitment": commitment}
    template = "market/_replay.html" if request.headers.get("HX-Request") == "true" else "market/round.html"
    return render(request, template, context)


urlpatterns = [
    path("", market, name="market"),
    path("rounds/<int:pk>/", round_page, name="round"),
    path("rounds/<int:pk>/replay/", round_replay_page, name="round-replay"),
]

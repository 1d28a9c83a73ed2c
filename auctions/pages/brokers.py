"""The broker's market page: the welfare allocation of the current book at its LP duals (MECM's
prices), for the broker's principals. The console itself is `market.views.brokers`."""

from django.shortcuts import render

from auctions.selectors.brokers import BrokerQuoteUnavailable, broker_market_prices
from market.views.brokers import broker_required
from market.views.common import now


@broker_required
def broker_prices(request):
    """Which of the principals' queued jobs the welfare allocation trades, at what price per
    device-hour, and what the provider principals' free devices are worth at the duals."""
    try:
        context = {"prices": broker_market_prices(broker=request.user, now=now())}
    except BrokerQuoteUnavailable as error:
        context = {"unavailable": error.message}
    return render(request, "broker/prices.html", context)

"""`GET /api/v1/broker/prices`: the broker's view of the book at the LP duals (MECM's prices)."""

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from auctions.selectors.brokers import broker_market_prices
from config.openapi import ErrorSerializer
from market.api.brokers import IsBroker


class PrincipalJobQuoteSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    principal = serializers.CharField()
    devices = serializers.IntegerField()
    bid = serializers.FloatField()
    trades = serializers.BooleanField()
    resource_id = serializers.IntegerField(allow_null=True)
    price = serializers.FloatField(allow_null=True, help_text="per device-hour, at the duals")


class ResourceQuoteSerializer(serializers.Serializer):
    resource_id = serializers.IntegerField()
    principal = serializers.CharField()
    free = serializers.IntegerField()
    ask = serializers.FloatField()
    dual_price = serializers.FloatField(help_text="per device-hour over the ask: the capacity's shadow price")


class BrokerMarketPricesSerializer(serializers.Serializer):
    welfare = serializers.FloatField()
    lp_bound = serializers.FloatField()
    jobs_in_book = serializers.IntegerField()
    resources_in_book = serializers.IntegerField()
    jobs = PrincipalJobQuoteSerializer(many=True)
    resources = ResourceQuoteSerializer(many=True)


class BrokerPricesView(APIView):
    """The welfare allocation of the current book and its LP duals, for the broker's principals
    (indicative: the round clears by the configured rule; floats, as the engine computes them)."""

    permission_classes = [IsBroker]

    @extend_schema(
        responses={200: BrokerMarketPricesSerializer, 503: ErrorSerializer}
    )  # broker_quote_unavailable
    def get(self, request):
        prices = broker_market_prices(broker=request.user, now=timezone.now())
        return Response(BrokerMarketPricesSerializer(prices).data)


urlpatterns = [path("broker/prices", BrokerPricesView.as_view(), name="broker-prices")]

"""The public market and published rounds over REST: translate the request, call one selector or
service, translate back. `GET /market` needs no login; snapshots, results and replays need any
signed-in role (consumer, provider or operator)."""

from django.conf import settings
from django.urls import path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from auctions.selectors import market as market_selectors
from auctions.selectors import tiers as tier_selectors
from auctions.services.replays import round_result_export, round_snapshot_export
from market.api.serializers import money_field


class OfferSerializer(serializers.Serializer):
    devices = serializers.IntegerField()
    free = serializers.IntegerField()
    memory_per_device_gib = serializers.DecimalField(max_digits=8, decimal_places=2)
    speed_factor = serializers.DecimalField(max_digits=6, decimal_places=3)
    ask_per_device_hour = money_field()
    ask_per_reference_device_hour = money_field()


class MarketClassSerializer(serializers.Serializer):
    resource_class = serializers.CharField()
    device_class = serializers.CharField()
    memory_tier_gib = serializers.IntegerField()
    region = serializers.CharField()
    providers = serializers.IntegerField()
    devices = serializers.IntegerField()
    free_devices = serializers.IntegerField()
    lowest_ask_per_reference_device_hour = money_field()
    offers = OfferSerializer(many=True)


class TradeSerializer(serializers.Serializer):
    round = serializers.IntegerField()
    cleared_at = serializers.DateTimeField()
    price_per_reference_device_hour = money_field()
    price_per_device_hour = money_field()


class ClassPricesSerializer(serializers.Serializer):
    resource_class = serializers.CharField()
    trades = serializers.IntegerField()
    last_price_per_reference_device_hour = money_field()
    median_price_per_reference_device_hour = money_field()
    recent = TradeSerializer(many=True)


class RecentPricesSerializer(serializers.Serializer):
    rounds = serializers.ListField(child=serializers.IntegerField())
    classes = ClassPricesSerializer(many=True)


class TierPlacedSerializer(serializers.Serializer):
    END = serializers.IntegerField()
    EDGE = serializers.IntegerField()
    CLOUD = serializers.IntegerField()


class TierClassSerializer(serializers.Serializer):
    device_class = serializers.CharField()
    rounds = serializers.IntegerField()
    jobs = serializers.IntegerField()
    placed_edge = serializers.IntegerField()
    placed_cloud = serializers.IntegerField()
    overflow_share = serializers.FloatField(allow_null=True)
    overflow_causes = serializers.DictField(child=serializers.IntegerField())
    round = serializers.IntegerField()
    cloud_price = money_field(allow_null=True)
    edge_price_median = money_field(allow_null=True)
    edge_price_low = money_field(allow_null=True)
    edge_price_high = money_field(allow_null=True)


class TiersSerializer(serializers.Serializer):
    """Cloud–edge tiers over recent rounds (docs/ai-bazaar.md): placements per tier, the overflow
    share, and per device class the cloud's and the edge's prices per reference device-hour."""

    rounds = serializers.ListField(child=serializers.IntegerField())
    jobs = serializers.IntegerField()
    placed = TierPlacedSerializer()
    overflow_share = serializers.FloatField(allow_null=True)
    device_classes = TierClassSerializer(many=True)


class MarketSerializer(serializers.Serializer):
    currency = serializers.CharField()
    price_unit = serializers.CharField()
    classes = MarketClassSerializer(many=True)
    recent_prices = RecentPricesSerializer()
    tiers = TiersSerializer()


class MarketView(APIView):
    """What is on offer per resource class (devices, memory, region, asks) and recent clearing
    prices. Prices per reference device-hour, with the per-device-hour figure beside them."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses=MarketSerializer)
    def get(self, request):
        offers = market_selectors.market_offers(
            now=timezone.now(),
            heartbeat_timeout_s=settings.CPX_HEARTBEAT_TIMEOUT_S,
            include_unseen=settings.CPX_BOOK_INCLUDE_UNSEEN_PROVIDERS,
        )
        market = {
            "currency": settings.CPX_CURRENCY,
            "price_unit": f"{settings.CPX_CURRENCY} per reference device-hour",
            "classes": offers,
            "recent_prices": market_selectors.market_recent_prices(),
            "tiers": tier_selectors.market_tiers(),
        }
        return Response(MarketSerializer(market).data)


class RoundSnapshotView(APIView):
    """A round's published snapshot (its books and hashes), to replay anywhere: any signed-in role."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, pk):
        document = round_snapshot_export(round_id=pk)
        return Response(document, headers=_attachment(f"cpx-round-{pk}-snapshot.json"))


class RoundResultView(APIView):
    """A round's published result (the engine's answer, prices, welfare, hashes): any signed-in role."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, pk):
        document = round_result_export(round_id=pk)
        return Response(document, headers=_attachment(f"cpx-round-{pk}-result.json"))


def _attachment(filename: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}


urlpatterns = [
    path("market", MarketView.as_view(), name="market"),
    path("rounds/<int:pk>/snapshot", RoundSnapshotView.as_view(), name="round-snapshot"),
    path("rounds/<int:pk>/result", RoundResultView.as_view(), name="round-result"),
]

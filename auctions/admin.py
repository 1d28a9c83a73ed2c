"""Operators' admin for rounds, leases and quotes: read-only. Rounds change only through the round
services (a hand edit would break the published hashes); leases through the lease services."""

from django.contrib import admin

from auctions.models import Lease, PriceQuote, Round


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Round)
class RoundAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "opened_at", "cleared_at", "jobs_in_book", "jobs_matched", "welfare"]
    list_filter = ["status"]
    exclude = ["snapshot"]  # can be megabytes; `cpx_round replay` and the API read it


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "round",
        "job",
        "resource",
        "devices",
        "unit_price_paid",
        "unit_price_received",
        "status",
    ]
    list_filter = ["status", "resource_class"]
    list_select_related = ["round", "job", "resource__provider"]
    raw_id_fields = ["round", "job", "resource", "provider"]


@admin.register(PriceQuote)
class PriceQuoteAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "resource_class",
        "recommended_ask",
        "expected_price",
        "expected_utilisation",
        "created_at",
    ]
    list_filter = ["device_class", "region"]

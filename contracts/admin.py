"""Read-only admin of on-chain settlement: batches move only through contracts.services (the
dashboard's retry action), deposits only by event."""

from django.contrib import admin

from contracts.models import (
    ChainDeployment,
    ChainDeposit,
    ConsumerWallet,
    ReconciliationIssue,
    SettlementBatch,
    SettlementLease,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ChainDeployment)
class ChainDeploymentAdmin(ReadOnlyAdmin):
    list_display = ["address", "network", "deposits_scanned_block", "events_scanned_block", "reconciled_at"]


@admin.register(ConsumerWallet)
class ConsumerWalletAdmin(ReadOnlyAdmin):
    list_display = ["address", "user", "created_at"]
    search_fields = ["address", "user__username"]


@admin.register(ChainDeposit)
class ChainDepositAdmin(ReadOnlyAdmin):
    list_display = ["tx_hash", "log_index", "address", "amount_wei", "amount", "user", "status", "seen_at"]
    list_filter = ["status"]
    search_fields = ["tx_hash", "address", "user__username"]


class SettlementLeaseInline(admin.TabularInline):
    model = SettlementLease
    fields = ["lease", "provider_address", "provider_wei", "fee_wei", "recon_status", "provider_claimed"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(SettlementBatch)
class SettlementBatchAdmin(ReadOnlyAdmin):
    list_display = ["id", "batch_key", "status", "lease_count", "total", "tx_hash", "gas_used", "attempts"]
    list_filter = ["status", "confirmed_via"]
    search_fields = ["batch_key", "tx_hash", "merkle_root"]
    inlines = [SettlementLeaseInline]


@admin.register(ReconciliationIssue)
class ReconciliationIssueAdmin(ReadOnlyAdmin):
    list_display = ["kind", "key", "batch", "detail", "last_seen_at", "resolved_at"]
    list_filter = ["kind"]

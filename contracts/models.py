"""On-chain settlement: the contract a batch went to, consumers' wallets, deposits seen on chain,
settlement batches (the outbox) and the leases in them, and what the reconciler found.

Money on chain is an integer (`*_wei`: native wei or a token's base units); the ledger's Decimal maps
to it through `CHAIN_WEI_PER_UNIT` (contracts.services.money). Wei columns are DecimalField(78, 0):
an uint256 fits, SQLite and PostgreSQL both store it exactly.
"""

from django.db import models
from django.db.models import Q

from auctions.models import Lease
from market.models import User
from market.money import MoneyField

WEI_DIGITS = 78  # an uint256 has at most 78 decimal digits


def WeiField(**kwargs):  # noqa: N802 - a field factory, read like a field class
    return models.DecimalField(max_digits=WEI_DIGITS, decimal_places=0, **kwargs)


class ChainDeployment(models.Model):
    """One Settlement contract on one chain. Every row below belongs to one, so rows written against
    an in-process EVM of an earlier run (gone with its process) never mix with today's chain.

    `network` is `rpc:<chain id>` for a real node, `in-process:<per-process id>` for the embedded EVM
    (its addresses and tx hashes repeat from run to run: the per-process id tells them apart)."""

    network = models.CharField(max_length=64)
    address = models.CharField(max_length=42)
    deposits_scanned_block = models.BigIntegerField(default=-1, help_text="last block read for deposits")
    events_scanned_block = models.BigIntegerField(default=-1, help_text="last block read by the reconciler")
    round_events_scanned_block = models.BigIntegerField(
        default=-1, help_text="last block read for RoundCommitted events (issue 12)"
    )
    reconciled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["network", "address"], name="chain_deployment_unique")]

    def __str__(self) -> str:
        return f"{self.address} on {self.network}"

    @property
    def in_process(self) -> bool:
        return self.network.startswith("in-process:")


class ConsumerWallet(models.Model):
    """The address a consumer deposits from: its on-chain escrow backs its ledger balance."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="chain_wallet")
    address = models.CharField(max_length=42, unique=True, help_text="EIP-55 checksummed address")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.address} ({self.user})"


class ChainDeposit(models.Model):
    """A `Deposited` event, seen once and credited once. Its identity is (transaction, ordinal of the
    event among the transaction's own `Deposited` events): unlike the log index, that does not change
    when a reorg mines the same transaction in another block (ledger reference
    `chain:deposit:<tx>:Deposited:<ordinal>`). `block_number`, `block_hash` and `log_index` say where it
    was last seen; a credit whose transaction a reorg dropped is REVERSED."""

    class Status(models.TextChoices):
        CREDITED = "CREDITED", "Credited to the consumer's balance"
        UNMATCHED = "UNMATCHED", "No consumer has this wallet (credited once one registers it)"
        DUST = "DUST", "Below the ledger's quantum"
        REVERSED = "REVERSED", "Its transaction was reorged out: the credit was taken back"

    deployment = models.ForeignKey(ChainDeployment, on_delete=models.PROTECT, related_name="deposits")
    tx_hash = models.CharField(max_length=66)
    event_ordinal = models.PositiveIntegerField(default=0, help_text="nth Deposited event of its transaction")
    log_index = models.PositiveIntegerField()
    block_number = models.BigIntegerField()
    block_hash = models.CharField(max_length=66, blank=True)
    address = models.CharField(max_length=42)
    amount_wei = WeiField()
    amount = MoneyField(default=0, help_text="credited to the ledger")
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices)
    seen_at = models.DateTimeField()
    credited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-block_number", "-log_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "tx_hash", "event_ordinal"], name="chain_deposit_once_per_event"
            ),
            models.CheckConstraint(condition=Q(amount_wei__gt=0), name="chain_deposit_positive"),
        ]

    def __str__(self) -> str:
        return f"deposit {self.amount_wei} wei from {self.address} ({self.status})"


class SettlementBatch(models.Model):
    """A set of completed leases settled together: the outbox row of one `commitBatch`.

    `batch_key` (bytes32 hex) is the idempotency key and the on-chain batch id at once: the contract
    refuses a second commit of it (`BatchAlreadySettled`), and a send whose outcome was lost is found
    again by looking it up on chain. `leaves` is the committed leaf list, so the tree and every proof
    can be rebuilt from the row alone.

    PENDING → SUBMITTED (a worker holds it; the transaction may be on its way) → CONFIRMED | FAILED.
    A SUBMITTED row older than CPX_SETTLEMENT_SUBMIT_STALE_S belongs to a worker that died: the next
    submit looks its key up on chain before anything is sent again.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SUBMITTED = "SUBMITTED", "Submitted"
        CONFIRMED = "CONFIRMED", "Confirmed"
        FAILED = "FAILED", "Failed"

    class ConfirmedVia(models.TextChoices):
        RECEIPT = "RECEIPT", "Our transaction's receipt"
        CHAIN_LOOKUP = "CHAIN_LOOKUP", "Found on chain after an interrupted send"
        ALREADY_SETTLED = "ALREADY_SETTLED", "Contract answered BatchAlreadySettled"

    deployment = models.ForeignKey(ChainDeployment, on_delete=models.PROTECT, related_name="batches")
    batch_key = models.CharField(max_length=66, unique=True, help_text="bytes32 on-chain batch id (hex)")
    merkle_root = models.CharField(max_length=66)
    leaves = models.JSONField(help_text="[lease id, consumer, provider, amount wei, refund wei] as committed")
    leaf_count = models.PositiveIntegerField()
    lease_count = models.PositiveIntegerField()
    total_wei = WeiField()
    total = MoneyField(help_text="the ledger amounts this batch carries (payments + fees)")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    confirmed_via = models.CharField(max_length=16, choices=ConfirmedVia.choices, blank=True)
    tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.BigIntegerField(null=True, blank=True)
    gas_used = models.BigIntegerField(null=True, blank=True)
    fee_wei = WeiField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    chain_seen = models.BooleanField(default=False, help_text="the reconciler saw its BatchCommitted event")
    chain_root = models.CharField(max_length=66, blank=True)
    chain_total_wei = WeiField(null=True, blank=True)
    chain_debits = models.JSONField(default=dict, blank=True, help_text="consumer → wei debited on chain")
    created_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(leaf_count__gte=1), name="settlement_batch_not_empty"),
            models.CheckConstraint(
                condition=~Q(status="CONFIRMED") | ~Q(tx_hash=""), name="settlement_batch_confirmed_has_tx"
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} {self.batch_key[:10]}… {self.status}"


class SettlementLease(models.Model):
    """One lease in one batch (a lease is in at most one: the contract would not notice twice).

    A lease gives up to two leaves: its provider's payment (on-chain leaf id = lease id) and the
    platform's fee (leaf id = FEE_LEAF_BASE + lease id, paid to CHAIN_FEE_ADDRESS). The consumer's
    refund stays in its on-chain escrow, as it stays in its ledger balance: `refund_wei` is 0.
    """

    class Recon(models.TextChoices):
        UNCHECKED = "UNCHECKED", "Not yet reconciled"
        PENDING = "PENDING", "Batch not on chain yet"
        MATCHED = "MATCHED", "Ledger and chain agree"
        MISSING_ON_CHAIN = "MISSING_ON_CHAIN", "Not on chain"
        AMOUNT_MISMATCH = "AMOUNT_MISMATCH", "Ledger and chain amounts differ"
        CLAWED_BACK = "CLAWED_BACK", "The consumer took the provider's payment back on chain"

    batch = models.ForeignKey(SettlementBatch, on_delete=models.PROTECT, related_name="settled_leases")
    lease = models.OneToOneField(Lease, on_delete=models.PROTECT, related_name="chain_settlement")
    consumer_address = models.CharField(max_length=42)
    provider_address = models.CharField(max_length=42)
    fee_address = models.CharField(max_length=42)
    provider_amount = MoneyField(help_text="ledger payment to the provider when batched")
    fee_amount = MoneyField(help_text="ledger fee (and surplus) to the platform when batched")
    provider_wei = WeiField()
    fee_wei = WeiField()
    refund_wei = WeiField(default=0)
    recon_status = models.CharField(max_length=16, choices=Recon.choices, default=Recon.UNCHECKED)
    recon_detail = models.CharField(max_length=300, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    provider_claimed = models.BooleanField(default=False)
    provider_claim_tx = models.CharField(max_length=66, blank=True)
    fee_claimed = models.BooleanField(default=False)
    clawed_back_tx = models.CharField(
        max_length=66, blank=True, help_text="the consumer's reclaimLeaf of the provider's payment"
    )

    class Meta:
        ordering = ["lease_id"]
        indexes = [models.Index(fields=["recon_status"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(provider_wei__gte=0) & Q(fee_wei__gte=0) & Q(refund_wei__gte=0),
                name="settlement_lease_amounts_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(provider_wei__gt=0) | Q(fee_wei__gt=0), name="settlement_lease_moves_money"
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.lease_id} in batch {self.batch_id} ({self.recon_status})"


class ReconciliationIssue(models.Model):
    """Something the chain holds that the database cannot account for (or the reverse, batch-wide):
    recorded once per (kind, key), with when it was last seen."""

    class Kind(models.TextChoices):
        UNKNOWN_BATCH = "UNKNOWN_BATCH", "A batch on chain that CPX did not create"
        UNKNOWN_ON_CHAIN = "UNKNOWN_ON_CHAIN", "A lease claimed on chain that its batch does not hold"
        DEBIT_MISMATCH = "DEBIT_MISMATCH", "Escrow debited on chain differs from the batch's leaves"
        ROOT_MISMATCH = "ROOT_MISMATCH", "The chain holds another root under the batch's key"
        MISSING_ON_CHAIN = "MISSING_ON_CHAIN", "A confirmed batch the chain does not have"
        DEPOSIT_REORGED = "DEPOSIT_REORGED", "A credited deposit's transaction was reorged out"
        ESCROW_RECLAIMED = "ESCROW_RECLAIMED", "A consumer took escrow back on chain (reclaim)"
        ORDER_REFUSED = "ORDER_REFUSED", "A lease its job's signed order cannot cover (unpaid on chain)"

    deployment = models.ForeignKey(ChainDeployment, on_delete=models.PROTECT, related_name="issues")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    key = models.CharField(max_length=160)
    batch = models.ForeignKey(
        SettlementBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="issues"
    )
    detail = models.CharField(max_length=400)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "kind", "key"], name="reconciliation_issue_once")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


class SettlementOrder(models.Model):
    """A consumer's EIP-712 order for one job (contracts.orders): the signature that lets the
    settlement contract debit its escrow for this job, up to `max_amount_wei`, before `deadline`.

    A job with an order settles on chain under it; a job without one (a consumer without a wallet)
    settles on the off-chain ledger alone. Per wallet, nonces run 1, 2, 3… and `cumulative_max_wei` is the
    running total of `max_amount_wei` (SettlementV2 bounds a consumer's lifetime debits by it)."""

    job = models.OneToOneField("market.JobRequest", on_delete=models.PROTECT, related_name="chain_order")
    deployment = models.ForeignKey(ChainDeployment, on_delete=models.PROTECT, related_name="orders")
    consumer_address = models.CharField(max_length=42)
    job_hash = models.CharField(max_length=66)
    max_amount_wei = WeiField()
    cumulative_max_wei = WeiField()
    nonce = models.PositiveIntegerField()
    deadline = models.BigIntegerField(help_text="unix seconds")
    chain_id = models.BigIntegerField()
    signature = models.CharField(max_length=132)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["consumer_address", "nonce"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "consumer_address", "nonce"], name="settlement_order_nonce_once"
            ),
            models.CheckConstraint(condition=Q(max_amount_wei__gt=0), name="settlement_order_positive"),
        ]

    def __str__(self) -> str:
        return f"order {self.nonce} of {self.consumer_address} for job {self.job_id}"


class RoundCommitment(models.Model):
    """A cleared round's hashes committed on chain (SettlementV2.commitRounds): the outbox row of one
    round, and what the reconciler last found (issue 12, the match on chain).

    `snapshot_sha256` / `result_sha256` are the hashes sent, copied from the round when the row was made;
    the contract keeps keccak256 of the two under the round id, written once. PENDING → SUBMITTED (a
    worker holds it under `claim`; its transaction may be on its way) → CONFIRMED | FAILED. A SUBMITTED
    row older than CPX_SETTLEMENT_SUBMIT_STALE_S lost its worker: the next run asks the chain first.
    `chain_status` is the reconciler's verdict: the chain holds these hashes (MATCHED), nothing (MISSING),
    or other hashes, or the database's round no longer hashes to them (MISMATCH)."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SUBMITTED = "SUBMITTED", "Submitted"
        CONFIRMED = "CONFIRMED", "Confirmed"
        FAILED = "FAILED", "Failed"

    class ConfirmedVia(models.TextChoices):
        RECEIPT = "RECEIPT", "Our transaction's receipt"
        CHAIN_LOOKUP = "CHAIN_LOOKUP", "Found on chain after an interrupted send"

    class ChainStatus(models.TextChoices):
        UNCHECKED = "UNCHECKED", "Not reconciled yet"
        MATCHED = "MATCHED", "The chain holds the round's hashes"
        MISSING = "MISSING", "The chain holds nothing for the round"
        MISMATCH = "MISMATCH", "The chain and the database disagree"

    deployment = models.ForeignKey(
        ChainDeployment, on_delete=models.PROTECT, related_name="round_commitments"
    )
    round = models.ForeignKey("auctions.Round", on_delete=models.PROTECT, related_name="chain_commitments")
    snapshot_sha256 = models.CharField(max_length=64)
    result_sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    confirmed_via = models.CharField(max_length=16, choices=ConfirmedVia.choices, blank=True)
    claim = models.CharField(max_length=32, blank=True, help_text="the worker run holding a SUBMITTED row")
    tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.BigIntegerField(null=True, blank=True)
    gas_used = models.BigIntegerField(null=True, blank=True, help_text="the whole transaction's")
    rounds_in_tx = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    chain_status = models.CharField(max_length=10, choices=ChainStatus.choices, default=ChainStatus.UNCHECKED)
    chain_detail = models.CharField(max_length=300, blank=True)
    chain_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["round_id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "round"], name="round_commitment_once_per_contract"
            ),
            models.CheckConstraint(
                condition=~Q(status="CONFIRMED") | ~Q(tx_hash=""), name="round_commitment_confirmed_has_tx"
            ),
        ]

    def __str__(self) -> str:
        return f"round {self.round_id} commitment {self.status}"

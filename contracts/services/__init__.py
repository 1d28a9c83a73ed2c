"""Settlement on chain: batches of completed leases (the outbox), deposits credited by event, and the
reconciler that compares the chain's events with the ledger per lease.

Flow 7. A completed lease is paid in the ledger first (auctions.services.settlement.lease_settle: escrow →
provider earnings, fee → platform, rest → consumer balance). Here, when a chain is configured:

1. `settlement_batch_create` groups such leases (consumer has a wallet, its on-chain escrow covers them)
   into a PENDING SettlementBatch, in one transaction: leaves, Merkle root, and the bytes32 key that is
   also the on-chain batch id. A lease is in at most one batch (a unique row per lease): the contract
   would not notice the same lease in two batches, so the database must.
2. `settlement_batch_submit` sends it OUTSIDE any database transaction: claim the row (PENDING →
   SUBMITTED, attempts + 1, compare-and-set), send `commitBatch`, then record the receipt (SUBMITTED →
   CONFIRMED). Crash recovery rests on the key: an attempt after the first, or a SUBMITTED row whose
   worker went silent for CPX_SETTLEMENT_SUBMIT_STALE_S, first asks the chain `batchOf(key)`; a settled
   key is recorded CONFIRMED from the chain's own data (its BatchCommitted event) and nothing is sent
   twice. Were it sent twice anyway, the contract refuses (`BatchAlreadySettled`): recorded as already
   settled, not as a failure. ChainUnavailable puts the row back to PENDING with a backoff and is raised
   for the task to retry; any other rejection is FAILED with the contract's error name (an operator
   retries it with `settlement_batch_retry`).
3. `settlement_reconcile` reads the contract's events since its last block (BatchCommitted,
   EscrowDebited, Claimed, LeaseSettled), records what each batch and lease saw on chain, flags what the
   database cannot account for (ReconciliationIssue), then sets each batched lease's status: MATCHED,
   PENDING, MISSING_ON_CHAIN or AMOUNT_MISMATCH (the ledger's amounts now vs the committed leaf).
4. `chain_deposits_sync` credits each `Deposited` event once to the wallet's consumer:
   `ledger_deposit(reference="chain:deposit:<tx>:<log index>")` next to a unique ChainDeposit row.

Money. Ledger Decimal (6 dp) × CHAIN_WEI_PER_UNIT = wei (exact: the unit is a multiple of 10**6). Each
lease gives up to two leaves: the provider's payment (leaf id = lease id) and the platform's fee and
surplus (leaf id = FEE_LEAF_BASE + lease id, paid to CHAIN_FEE_ADDRESS). Together they are the lease's
charge, which the commit debits from the consumer's on-chain escrow; the refund stays in that escrow just
as it returns to the consumer's ledger balance, so the escrow keeps backing the balance.

Orders: a consumer with a wallet signs an EIP-712 order per job (`orders`: draft, submit, the job's
settlement path); one without a wallet settles on the ledger alone.

Modules, by use case: `batches` (create, submit, retry: the outbox), `deposits` (wallets, deposits sync,
demo funding), `reconcile`, `claims` (relayed claims, the platform's fee claims); shared: `deployment`
(the chain and contract CPX talks to, the signer's database lock) and `money` (ledger amounts ↔ wei).
Every public name is importable from here.
"""

from contracts.services.batches import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    SCAN_FACTOR,
    ZERO_ADDRESS,
    BatchNotFound,
    BatchNotRetryable,
    Status,
    batch_credits,
    batch_debits,
    batch_key_for,
    batch_leaves,
    batch_tree,
    is_credit_batch,
    is_credit_contract,
    settlement_batch_create,
    settlement_batch_retry,
    settlement_batch_submit,
    settlement_batches_due,
)
from contracts.services.claims import settlement_claims_relay, settlement_fees_claim
from contracts.services.deployment import (
    chain_client,
    checked_address,
    deployment_for,
    signer_lock,
)
from contracts.services.deposits import (
    DepositSync,
    WalletTaken,
    chain_demo_fund,
    chain_deposits_sync,
    consumer_wallet_register,
)
from contracts.services.money import FEE_LEAF_BASE, from_wei, lease_ledger_amounts, to_wei
from contracts.services.orders import (
    OrderExists,
    OrderRefused,
    chain_demo_sign_orders,
    order_document,
    settlement_order_draft,
    settlement_order_submit,
    settlement_path,
)
from contracts.services.reconcile import EVENTS, Recon, Reconciliation, settlement_reconcile

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "EVENTS",
    "FEE_LEAF_BASE",
    "SCAN_FACTOR",
    "ZERO_ADDRESS",
    "BatchNotFound",
    "BatchNotRetryable",
    "DepositSync",
    "OrderExists",
    "OrderRefused",
    "Recon",
    "Reconciliation",
    "Status",
    "WalletTaken",
    "batch_key_for",
    "batch_credits",
    "batch_debits",
    "batch_leaves",
    "batch_tree",
    "is_credit_batch",
    "is_credit_contract",
    "chain_client",
    "chain_demo_fund",
    "chain_demo_sign_orders",
    "chain_deposits_sync",
    "checked_address",
    "consumer_wallet_register",
    "deployment_for",
    "from_wei",
    "lease_ledger_amounts",
    "order_document",
    "settlement_batch_create",
    "settlement_batch_retry",
    "settlement_batch_submit",
    "settlement_batches_due",
    "settlement_claims_relay",
    "settlement_fees_claim",
    "settlement_order_draft",
    "settlement_order_submit",
    "settlement_path",
    "settlement_reconcile",
    "signer_lock",
    "to_wei",
]

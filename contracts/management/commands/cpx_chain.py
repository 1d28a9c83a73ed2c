"""`python manage.py cpx_chain deploy|fund-demo|sync|batch|reconcile|claim-fees|proofs|status|commit-rounds|
reconcile-rounds`: on-chain settlement by hand (the last two: cleared rounds' hashes on chain, issue 12).

`deploy --admin ADDRESS` puts a settlement contract on the configured chain (CHAIN_RPC_URL +
CHAIN_SIGNER_KEY) with ADDRESS (a cold key, never the hot signer) as admin and the signer as operator,
and prints the CHAIN_CONTRACT_ADDRESS to export (SettlementV2 unless CHAIN_CONTRACT_VERSION=v1 or
`--contract settlement`: the previous contract). `proofs
--from-chain ADDRESS` rebuilds every payee's cumulative claim and proof of a SettlementV2 from the chain
alone (commit calldata), with no CPX database. The others run one step of the settlement flow.
"""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from config.errors import DomainError
from contracts.client import ChainRejected, ChainUnavailable, SettlementClient, SettlementV2Client
from contracts.demo import chain_summary, demo_chain_setup
from contracts.services import (
    chain_client,
    chain_deposits_sync,
    deployment_for,
    settlement_batch_create,
    settlement_batch_submit,
    settlement_batches_due,
    settlement_fees_claim,
    settlement_reconcile,
)
from contracts.services.deployment import checked_address
from contracts.services.round_commitments import round_commitments_reconcile, round_commitments_submit


class Command(BaseCommand):
    help = "On-chain settlement: deploy the contract, fund demo consumers, sync, batch, reconcile."

    def add_arguments(self, parser):
        parser.add_argument(
            "action",
            choices=[
                "deploy",
                "fund-demo",
                "sync",
                "batch",
                "reconcile",
                "claim-fees",
                "proofs",
                "status",
                "commit-rounds",
                "reconcile-rounds",
            ],  # fmt: skip
        )
        parser.add_argument("--admin", help="deploy: the admin address (a cold key, not CHAIN_SIGNER_KEY's)")
        parser.add_argument(
            "--contract",
            choices=["settlement", "v2"],
            default=None,
            help="deploy: v2 (SettlementV2) or settlement (the previous); default: CHAIN_CONTRACT_VERSION",
        )
        parser.add_argument("--from-chain", dest="from_chain", help="proofs: the SettlementV2 address")
        parser.add_argument("--from-block", dest="from_block", type=int, default=0)

    def handle(self, *args, action, **options):
        now = timezone.now()
        try:
            if action == "deploy":
                self.stdout.write(f"CHAIN_CONTRACT_ADDRESS={self._deploy(options)}")
            elif action == "proofs":
                if not options["from_chain"]:
                    raise CommandError("proofs needs --from-chain ADDRESS (a SettlementV2)")
                client = SettlementV2Client.connect(
                    settings.CHAIN_RPC_URL or None,
                    contract_address=checked_address(options["from_chain"], field_name="--from-chain"),
                    shared=not settings.CHAIN_RPC_URL,
                )
                proofs = client.proofs_from_chain(from_block=options["from_block"])
                self.stdout.write(json.dumps(proofs, indent=2))
            elif action == "claim-fees":
                self.stdout.write(json.dumps(settlement_fees_claim(now=now)))
            elif action == "fund-demo":
                self.stdout.write(demo_chain_setup())
            elif action == "sync":
                self.stdout.write(json.dumps(chain_deposits_sync(now=now).as_dict()))
            elif action == "batch":
                batch = settlement_batch_create(now=now)
                self.stdout.write(f"created batch {batch.pk}" if batch else "nothing to batch")
                for batch_id in settlement_batches_due(now=now):
                    sent = settlement_batch_submit(batch_id=batch_id, now=now)
                    self.stdout.write(f"batch {sent.pk}: {sent.status} {sent.tx_hash} {sent.error_code}")
            elif action == "commit-rounds":
                self.stdout.write(json.dumps(round_commitments_submit(now=now).as_dict()))
            elif action == "reconcile-rounds":
                self.stdout.write(json.dumps(round_commitments_reconcile(now=now).as_dict()))
            elif action == "reconcile":
                self.stdout.write(json.dumps(settlement_reconcile(now=now).as_dict()))
            else:
                deployment = deployment_for(chain_client(), now=now)
                self.stdout.write(json.dumps(chain_summary(deployment_id=deployment.pk), indent=2))
        except (ChainUnavailable, ChainRejected, DomainError) as error:
            raise CommandError(f"{type(error).__name__}: {error}") from error

    def _deploy(self, options) -> str:
        if not settings.CHAIN_RPC_URL or not settings.CHAIN_SIGNER_KEY:
            raise CommandError("deploy needs CHAIN_RPC_URL and CHAIN_SIGNER_KEY")
        if not options["admin"]:
            raise CommandError("deploy needs --admin ADDRESS: the admin is a cold key, never the hot signer")
        admin = checked_address(options["admin"], field_name="--admin")
        contract = options["contract"] or ("v2" if settings.CHAIN_CONTRACT_VERSION == "v2" else "settlement")
        if contract == "v2":
            client = SettlementV2Client.connect(settings.CHAIN_RPC_URL, settings.CHAIN_SIGNER_KEY)
            return client.deploy(admin=admin)
        client = SettlementClient.connect(settings.CHAIN_RPC_URL, settings.CHAIN_SIGNER_KEY)
        if admin == client.address:
            raise CommandError("--admin must not be the operator signer (CHAIN_SIGNER_KEY's address)")
        return client.deploy(admin=admin, operator=client.address)

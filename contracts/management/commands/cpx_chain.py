"""`python manage.py cpx_chain deploy|fund-demo|sync|batch|reconcile|status`: on-chain settlement by hand.

`deploy` puts a Settlement contract on the configured chain (CHAIN_RPC_URL + CHAIN_SIGNER_KEY) and
prints the CHAIN_CONTRACT_ADDRESS to export; the others run one step of the settlement flow.
"""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from contracts.client import ChainRejected, ChainUnavailable, SettlementClient
from contracts.demo import chain_summary, demo_chain_setup
from contracts.services import (
    chain_client,
    chain_deposits_sync,
    deployment_for,
    settlement_batch_create,
    settlement_batch_submit,
    settlement_batches_due,
    settlement_reconcile,
)


class Command(BaseCommand):
    help = "On-chain settlement: deploy the contract, fund demo consumers, sync, batch, reconcile."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["deploy", "fund-demo", "sync", "batch", "reconcile", "status"])

    def handle(self, *args, action, **options):
        now = timezone.now()
        try:
            if action == "deploy":
                if not settings.CHAIN_RPC_URL or not settings.CHAIN_SIGNER_KEY:
                    raise CommandError("deploy needs CHAIN_RPC_URL and CHAIN_SIGNER_KEY")
                client = SettlementClient.connect(settings.CHAIN_RPC_URL, settings.CHAIN_SIGNER_KEY)
                self.stdout.write(f"CHAIN_CONTRACT_ADDRESS={client.deploy()}")
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
            elif action == "reconcile":
                self.stdout.write(json.dumps(settlement_reconcile(now=now).as_dict()))
            else:
                deployment = deployment_for(chain_client(), now=now)
                self.stdout.write(json.dumps(chain_summary(deployment_id=deployment.pk), indent=2))
        except (ChainUnavailable, ChainRejected) as error:
            raise CommandError(f"{type(error).__name__}: {error}") from error

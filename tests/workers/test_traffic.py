"""The demo's simulated consumer traffic runs on its own accounts, never on a person's."""

from decimal import Decimal

import pytest
from django.utils import timezone

from market.models import JobRequest, LedgerAccount
from tests.factories import ConsumerFactory, OperatorFactory
from workers.simulation import TRAFFIC_CONSUMERS, ConsumerTraffic

pytestmark = pytest.mark.django_db(transaction=True)


class TestConsumerTraffic:
    def test_submits_as_its_own_consumers_and_leaves_a_persons_balance_alone(self, live_server):
        person = ConsumerFactory(username="acme-ai", balance=Decimal("100"))
        OperatorFactory()
        traffic = ConsumerTraffic(live_server.url, interval_s=3600).start(now=timezone.now())

        submitted = [traffic.submit_one() for _ in range(6)]
        traffic.stop(now=timezone.now())

        assert all(submitted), traffic.stats
        owners = set(JobRequest.objects.filter(pk__in=submitted).values_list("consumer__username", flat=True))
        assert owners <= {name for name, _ in TRAFFIC_CONSUMERS}
        assert not JobRequest.objects.filter(consumer=person).exists()
        assert LedgerAccount.objects.get(user=person).balance == Decimal("100")

    def test_a_second_start_funds_its_accounts_once(self, live_server):
        for _ in range(2):
            ConsumerTraffic(live_server.url, interval_s=3600).start(now=timezone.now()).stop(
                now=timezone.now()
            )

        name, funds = TRAFFIC_CONSUMERS[0]
        assert LedgerAccount.objects.get(user__username=name).balance == Decimal(funds)

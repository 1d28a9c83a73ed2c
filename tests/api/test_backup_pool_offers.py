"""The backup pool's restart reaches the standby's agent through the offer channel: an agent waiting on
`GET /api/v1/agent/offers` gets the job the moment the failing lease's transaction commits, with no
round in between (in-process notification on the embedded default; Redis in
tests/workers/test_agent_offers_live.py carries the same announcement)."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async

from auctions.models import Lease, Round, StandbyReservation
from auctions.services.leases import lease_fail
from auctions.services.offers import offer_hub
from market.models import JobRequest
from tests.api import test_agent_offers as offers_tests
from tests.api.test_agent_offers import auth, call, provider_key, until_waiting
from tests.conftest import NOW
from tests.integration import test_backup_pool as pool_tests
from tests.integration.test_backup_pool import reserve

# The fixtures of those modules, used here under the same names.
turns = offers_tests.turns
market = pool_tests.market
_per_class = pool_tests._per_class


@pytest.mark.django_db(transaction=True)
def test_the_standby_agent_waiting_on_the_offer_channel_gets_the_failed_job_without_a_round(market, turns):
    reservation = reserve(market)
    raw = provider_key(market["standby"].provider)
    rounds = Round.objects.count()

    def provider_dies():
        return lease_fail(
            provider=market["primary"].provider,
            lease_id=market["lease"].pk,
            reason=Lease.CloseReason.PROVIDER_FAULT,
            detail="the gaming PC was switched off",
            now=NOW + timedelta(seconds=4),
        )

    async def scenario():
        # The wait (30 s) outlasts the bound on the answer (20 s): only the notification answers in time.
        waiting = asyncio.create_task(call({"wait": 30}, auth(raw)))
        await until_waiting(1)
        assert not waiting.done()
        await sync_to_async(turns(provider_dies), thread_sensitive=False)()
        return await asyncio.wait_for(waiting, timeout=20)

    response = asyncio.run(scenario())

    assert response.status_code == 200, response.content
    [offer] = response.json()
    reservation.refresh_from_db()
    assert offer["id"] == reservation.takeover_id and offer["job"]["id"] == market["job"].pk
    assert JobRequest.objects.get(pk=market["job"].pk).status == JobRequest.Status.DISPATCHED
    assert reservation.status == StandbyReservation.Status.USED
    assert Round.objects.count() == rounds
    assert offer_hub.waiting() == 0

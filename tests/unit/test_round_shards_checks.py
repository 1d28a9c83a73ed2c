"""CPX_ROUND_SHARDS and its timeout are checked at start-up (auctions.E080–E082)."""

import pytest

from auctions.checks import check_round_shards

REDIS = "redis://127.0.0.1:6379/0"


def ids(messages) -> list[str]:
    return [message.id for message in messages]


class TestRoundShardsCheck:
    def test_one_shard_needs_no_shared_broker(self, settings):
        settings.CPX_ROUND_SHARDS = 1
        settings.CELERY_BROKER_URL = "memory://"

        assert check_round_shards() == []

    def test_several_shards_on_redis_are_accepted(self, settings):
        settings.CPX_ROUND_SHARDS = 4
        settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = REDIS

        assert check_round_shards() == []

    @pytest.mark.parametrize("shards", [0, -1, 65, True, "2", 1.5])
    def test_refuses_a_shard_count_outside_1_to_64(self, settings, shards):
        settings.CPX_ROUND_SHARDS = shards

        assert ids(check_round_shards()) == ["auctions.E080"]

    @pytest.mark.parametrize("timeout", [0, -1, 601, float("nan"), float("inf")])
    def test_refuses_a_timeout_outside_0_to_600_seconds(self, settings, timeout):
        settings.CPX_ROUND_SHARD_TIMEOUT_S = timeout

        assert ids(check_round_shards()) == ["auctions.E081"]

    @pytest.mark.parametrize(
        "broker, backend",
        [("memory://", REDIS), (REDIS, "cache+memory://"), ("memory://", "cache+memory://")],
    )
    def test_several_shards_need_redis_as_broker_and_result_backend(self, settings, broker, backend):
        settings.CPX_ROUND_SHARDS = 2
        settings.CELERY_BROKER_URL, settings.CELERY_RESULT_BACKEND = broker, backend

        assert ids(check_round_shards()) == ["auctions.E082"]

"""A round's books cleared in shards (CPX_ROUND_SHARDS > 1) against one shard, on the same snapshot.

No worker runs here: the round's own process clears every shard that no worker has started (the
shards are pure), so these tests check the planning, the split and the assembly; tests/workers/
test_round_shards_live.py runs the shards on real worker processes."""

from decimal import Decimal

import pytest

from auctions.mechanisms import clear
from auctions.mechanisms.canonical import input_sha256 as canonical_sha256
from auctions.mechanisms.shards import allocation, split
from auctions.models import Lease
from auctions.services import round_books as books
from auctions.services.round_shards import books_clear, books_clear_shard
from auctions.services.rounds import clearing_config, round_clear, round_open, round_replay
from tests.conftest import NOW
from tests.integration.test_rounds import bid, funded_consumer, online_resource

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed_market(settings):
    """Heterogeneous books in two device classes (a chain), thick unit classes and a posted-price book."""
    settings.CPX_THICK_BOOK_MIN_ORDERS = 3
    consumer = funded_consumer()
    for i in range(4):
        online_resource(device_count=4, ask_per_device_hour=Decimal(f"0.{10 + i}"))
        online_resource(
            device_count=2, memory_per_device_gib=Decimal("80"), ask_per_device_hour=Decimal("0.9")
        )
        online_resource(region="us-east", ask_per_device_hour=Decimal(f"0.{20 + i}"))
    for i in range(8):
        bid(consumer, f"0.{30 + i}", latency_sla_ms=None)
        bid(consumer, f"0.{40 + i}", latency_sla_ms=None, requested_device_count=2)
        bid(consumer, f"1.{i}", latency_sla_ms=None, region="us-east")
    for i in range(3):
        bid(consumer, f"2.{i}", latency_sla_ms=None, requested_device_count=4)


def cleared_books(*, shards: int, piece_min_jobs: int = 100):
    config = {**clearing_config(), "salt": "round-7", "posted_prices": books.posted_prices()}
    snapshot = books.snapshot_book(now=NOW, include_unseen=False, lock=False)
    builder = books.BookBuilder(snapshot=snapshot, config=config, now=NOW)
    results = books_clear(
        builder=builder,
        round_id=7,
        clear_document=lambda doc, digest: clear(doc, input_sha256=digest),
        shards=shards,
        timeout_s=30,
        piece_min_jobs=piece_min_jobs,
    )
    return builder, results


class TestShardedClearing:
    def test_one_and_several_shards_give_the_same_snapshot_and_result_hashes(self, mixed_market):
        one, one_results = cleared_books(shards=1)

        # piece_min_jobs=1: every greedy book is also cleared in pieces (its LP bound, shares of payments).
        for shards, piece_min_jobs in ((2, 1000), (3, 1000), (8, 1000), (2, 1), (3, 1)):
            many, many_results = cleared_books(shards=shards, piece_min_jobs=piece_min_jobs)

            assert many.snapshot_text() == one.snapshot_text()
            assert canonical_sha256(many_results) == canonical_sha256(one_results)
        assert {book.kind for book in one.books} >= {"heterogeneous", "unit"}
        assert sum(book.kind == "heterogeneous" for book in one.books) >= 2

    def test_a_sharded_round_commits_the_same_leases_and_replays(self, mixed_market, settings):
        settings.CPX_ROUND_SHARDS = 3
        round_obj = round_clear(round_id=round_open(now=NOW).pk, now=NOW)

        report = round_replay(round_id=round_obj.pk)

        assert round_obj.status == "CLEARED"
        assert report["match"] is True, report
        assert Lease.objects.filter(round=round_obj).count() == round_obj.jobs_matched > 0

    def test_the_chain_allocation_is_the_assignment_clear_returns(self, mixed_market):
        builder, results = cleared_books(shards=1)

        for book, result in zip(builder.books, results, strict=True):
            if book.kind == "heterogeneous":
                assert allocation(book.doc) == result["assignments"]

    def test_a_shard_cleared_twice_gives_the_same_answer(self, mixed_market):
        builder, _ = cleared_books(shards=1)
        payload = [{"index": i, "sha256": b.digest, "text": b.text} for i, b in enumerate(builder.books)]

        assert books_clear_shard(books=payload) == books_clear_shard(books=payload)

    def test_a_shard_refuses_a_document_that_does_not_hash_to_its_sha256(self, mixed_market):
        builder, _ = cleared_books(shards=1)
        book = builder.books[0]

        with pytest.raises(ValueError, match="does not hash"):
            books_clear_shard(books=[{"index": 0, "sha256": book.digest, "text": book.text + " "}])


class TestSplit:
    def test_the_split_balances_costs_and_keeps_every_book_once(self):
        groups = split([9, 1, 1, 1, 8, 2], 2)

        assert sorted(i for group in groups for i in group) == [0, 1, 2, 3, 4, 5]
        assert sorted(sum([9, 1, 1, 1, 8, 2][i] for i in group) for group in groups) == [11, 11]

    def test_more_shards_than_books_drops_the_empty_ones(self):
        assert split([3, 2], 5) == [[0], [1]]

"""A round's books cleared apart (auctions/mechanisms/shards.py): the chain's cheap allocation, a greedy
book priced in pieces and joined, and the split of books into shards."""

import random

import pytest

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.canonical import input_sha256
from auctions.mechanisms.shards import allocation, clear_piece, join, split


def greedy_book(seed: int, jobs: int = 60, providers: int = 20) -> dict:
    rng = random.Random(seed)
    return {
        "mechanism": "greedy",
        "payment_rule": "critical",
        "time_limit_s": 30,
        "jobs": [
            {
                "id": f"j{i}",
                "bid": round(rng.uniform(0.5, 20), 4),
                "gpus": rng.choice([1, 2, 2, 4]),
                "vram_per_gpu": rng.choice([8, 16, 24]),
                "vcpu": 0,
                "ram": 0,
                "base_hours": round(rng.uniform(0.5, 4), 3),
                "deadline_hours": 24,
            }
            for i in range(jobs)
        ],
        "providers": [
            {
                "id": f"r{k}",
                "gpus": rng.choice([2, 4, 8]),
                "vram_per_gpu": rng.choice([16, 24, 48]),
                "vcpu": 0,
                "ram": 0,
                "speed": rng.choice([0.5, 1.0, 1.6]),
                "ask_per_gpu_hour": round(rng.uniform(0.1, 1.5), 4),
            }
            for k in range(providers)
        ],
    }


class TestPieces:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    @pytest.mark.parametrize("pieces", [2, 3, 7])
    def test_a_book_priced_in_pieces_and_joined_is_the_book_cleared_whole(self, seed, pieces):
        doc = greedy_book(seed)

        joined = join([clear_piece(doc, piece=k, pieces=pieces) for k in range(pieces)])

        assert input_sha256(joined) == input_sha256(clear(doc))
        assert len(joined["payments"]) == len(joined["assignments"]) > pieces

    def test_the_chain_allocation_is_the_assignment_of_the_whole_clear(self):
        doc = greedy_book(4)

        assert allocation(doc) == clear(doc)["assignments"]

    def test_a_welfare_book_has_no_cheap_allocation_and_no_pieces(self):
        doc = {**greedy_book(5), "mechanism": "welfare", "payment_rule": "vcg"}

        assert allocation(doc) is None
        with pytest.raises(MechanismError):
            clear_piece(doc, piece=0, pieces=2)

    def test_a_bad_payment_rule_is_refused_as_clear_refuses_it(self):
        doc = {**greedy_book(6), "payment_rule": "vcg"}

        with pytest.raises(MechanismError) as refused:
            allocation(doc)
        with pytest.raises(MechanismError) as cleared:
            clear(doc)
        assert (refused.value.code, refused.value.message) == (cleared.value.code, cleared.value.message)


class TestSplit:
    def test_the_split_is_a_pure_function_of_the_costs(self):
        costs = [5, 3, 3, 2, 2, 2, 1]

        groups = split(costs, 3)

        assert groups == split(list(costs), 3)
        assert sorted(i for group in groups for i in group) == list(range(len(costs)))
        # LPT: within 4/3 of the best makespan (6 here).
        assert max(sum(costs[i] for i in group) for group in groups) <= 8

    def test_refuses_fewer_than_one_shard(self):
        with pytest.raises(MechanismError):
            split([1], 0)

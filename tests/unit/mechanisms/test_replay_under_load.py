"""Deterministic replay (issue 12 item 7): every rule gives the same result, and the same result hash,
on a quiet machine and on one whose CPUs are saturated by other processes — and the welfare MILP's
answer does not depend on how fast the clock runs, only on work limits (node and round counts).

The load is real: CPU-burning processes (twice as many as the machine has CPUs) run beside the second
solve of each book, in this process and in a fresh interpreter that knows only the documents (as a
replay does). No timing is asserted."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from auctions.mechanisms import MechanismError, clear, price, welfare_milp
from auctions.mechanisms.brokers import Broker, Server, User, clear_three_tier
from auctions.mechanisms.canonical import input_sha256
from tests.unit.mechanisms.test_heterogeneous_pruning import congested_book

ROOT = Path(__file__).resolve().parents[3]
FAST_CLOCK = 30  # seconds that pass between two readings of the welfare MILP's clock, when patched
BURN = "import itertools\nfor _ in itertools.count():\n    pass\n"


@pytest.fixture
def cpu_load():
    """Start CPU burners (2 per CPU) for the test's loaded half; stop exactly those afterwards."""
    burners = []

    def start():
        count = 2 * max(1, len(os.sched_getaffinity(0)))
        burners.extend(subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count))
        return len(burners)

    yield start
    for process in burners:
        process.kill()
        process.wait()


def unit_book(mechanism: str) -> dict:
    """A seeded one-unit book with ties and a lottery-sized margin (k = 12 of 40 bids, 30 asks)."""
    rng = np.random.default_rng(405)
    bids = [{"id": f"b{i}", "price": float(p)} for i, p in enumerate(np.round(rng.uniform(1, 20, 40), 1))]
    asks = [{"id": f"s{i}", "price": float(p)} for i, p in enumerate(np.round(rng.uniform(5, 25, 30), 1))]
    return {"mechanism": mechanism, "bids": bids, "asks": asks, "seed": 405}


def huang_book() -> dict:
    rng = np.random.default_rng(406)
    side = lambda prefix, low, high, n: [  # noqa: E731
        {"id": f"{prefix}{i}", "price": float(p), "quantity": float(q)}
        for i, (p, q) in enumerate(zip(rng.uniform(low, high, n), rng.uniform(0.5, 4.0, n), strict=True))
    ]
    return {"mechanism": "huang", "bids": side("b", 1, 20, 30), "asks": side("s", 5, 25, 25)}


def tiered_book() -> dict:
    """Cloud–edge tiers: 30 latency-bound bids over end, edge and cloud asks (docs/ai-bazaar.md)."""
    rng = np.random.default_rng(407)
    tiers = ["END", "END", "EDGE", "EDGE", "EDGE", "CLOUD", "CLOUD"]
    asks = [
        {"id": f"s{i}", "price": float(p), "quantity": int(q), "speed": float(v), "tier": tier}
        for i, (tier, p, q, v) in enumerate(
            zip(tiers, rng.uniform(0.3, 1.6, 7), rng.integers(1, 4, 7), rng.choice([1, 2, 3], 7), strict=True)
        )
    ]
    bids = [
        {"id": f"b{i}", "price": float(p), "accepts": [a["id"] for a in asks if rng.random() < 0.7]}
        for i, p in enumerate(np.round(rng.lognormal(-0.3, 0.4, 30), 3))
    ]
    return {"mechanism": "tiered", "salt": "round-407", "substitution": 0.5, "bids": bids, "asks": asks}


def welfare_auto_book() -> dict:
    """150 x 10 congested: automatic pruning forced below (its second round changes the answer here)."""
    return congested_book(150, 10)


def seeded_gang_book() -> dict:
    from tests.unit.mechanisms.test_gang import seeded_book  # that module imports this one's fixture

    return seeded_book()


BOOKS = {
    "mcafee": lambda: unit_book("mcafee"),
    "trade_reduction": lambda: unit_book("trade_reduction"),
    "vcg": lambda: unit_book("vcg"),
    "sbba": lambda: unit_book("sbba"),
    "sbba_buyer_lottery": lambda: unit_book("sbba_buyer_lottery"),
    "huang": huang_book,
    "welfare exact + vcg": lambda: dict(congested_book(16, 3), payment_rule="vcg"),
    "welfare pruned per provider": lambda: dict(congested_book(150, 10), pruning={"per_provider": 2}),
    "welfare automatic pruning": welfare_auto_book,
    "greedy + critical": lambda: dict(congested_book(150, 10), mechanism="greedy", payment_rule="critical"),
    "elastic_demand": lambda: {
        "mechanism": "elastic_demand",
        "followers": [
            {
                "id": f"j{i}",
                "weight": 1 + i / 7,
                "price": 0.3 + i / 50,
                "budget": 2 + i % 3,
                "max_quantity": 8,
            }
            for i in range(40)
        ],
    },
    "tiered": tiered_book,
    "brokers": lambda: broker_book(),  # MECM's three-tier book of a live round (docs/mecm.md)
    "posted_price": lambda: {
        "mechanism": "posted_price",
        "salt": "round-408",
        "prices": {"GPU/24G/eu-west": 1.5, "GPU/80G/eu-west": 3.0},
        "bids": [
            {"id": f"j{i}", "price": 1 + i / 10, "accepts": [f"r{k}" for k in range(i % 4, 8, 2)]}
            for i in range(30)
        ],
        "asks": [
            {
                "id": f"r{k}",
                "price": 0.5 + k / 5,
                "quantity": 2,
                "class": ("GPU/24G/eu-west", "GPU/80G/eu-west")[k % 2],
            }
            for k in range(8)
        ],
    },
    "gang": lambda: seeded_gang_book(),  # FusionAI's pipelines across providers (docs/fusionai-gangs.md)
    "backup_pool": lambda: {
        "mechanism": "backup_pool",
        "share": 0.5,
        "jobs": [
            {"id": f"j{i}", "devices": 1 + i % 3, "accepts": [f"r{k}" for k in range(i % 5, 10, 3)]}
            for i in range(25)
        ],
        "asks": [{"id": f"r{k}", "price": k % 4, "quantity": 1 + k % 3} for k in range(10)],
    },
}
GAMES = {
    "stackelberg uniform": {"game": "stackelberg", "valuations": [4, 6, 8, 10, 3.5, 7.25], "unit_cost": 1},
    "stackelberg per user": {
        "game": "stackelberg",
        "valuations": [4, 6, 8, 10, 3.5, 7.25],
        "unit_cost": 1,
        "capacity": 5,
        "pricing": "per_user",
    },
    "linear oligopoly": {
        "game": "linear_oligopoly",
        "alpha": 10,
        "beta": 2,
        "gamma": 0.5,
        "costs": [1, 2, 3],
    },
    "budget oligopoly": {
        "game": "budget_oligopoly",
        "valuations": [[8, 5], [6, 9], [4, 4]],
        "budgets": [3, 4, 2],
        "costs": [1, 1.5],
    },
}


def fast_clock(monkeypatch) -> None:
    """The welfare MILP's clock, FAST_CLOCK seconds later at every reading (HiGHS keeps its own)."""
    ticks = iter(range(0, 10**9, FAST_CLOCK))
    clock = types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
    monkeypatch.setattr(welfare_milp, "time", clock)


AUTOMATIC = {"AUTO_PRUNE_PAIRS": 0, "AUTO_PER_PROVIDER": 1, "AUTO_WIDER_PER_PROVIDER": 2}
REPLAY = """
import json
from auctions.mechanisms import MechanismError, clear, price, welfare_milp
from auctions.mechanisms.canonical import input_sha256
from tests.unit.mechanisms.test_replay_under_load import AUTOMATIC, BOOKS, GAMES
for name, value in AUTOMATIC.items():
    setattr(welfare_milp, name, value)
hashes = {name: input_sha256(clear(make())) for name, make in BOOKS.items()}
hashes.update({name: input_sha256(price(doc)) for name, doc in GAMES.items()})
print(json.dumps(hashes))
"""


def replay_elsewhere() -> dict:
    """Result hashes of every book, cleared by a fresh interpreter (a replay knows only the documents)."""
    done = subprocess.run(
        [sys.executable, "-c", REPLAY], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def automatic_pruning(monkeypatch):
    """Automatic pruning on small books: 1 pair per provider, then 2 in the second round."""
    for name, value in AUTOMATIC.items():
        monkeypatch.setattr(welfare_milp, name, value)


class TestReplayUnderLoad:
    def test_every_rule_gives_the_same_result_and_hash_under_cpu_load(self, cpu_load, automatic_pruning):
        books = {name: make() for name, make in BOOKS.items()}
        quiet = {name: clear(doc) for name, doc in books.items()}
        quiet.update({name: price(doc) for name, doc in GAMES.items()})

        assert cpu_load() >= 2
        loaded = {name: clear(doc) for name, doc in books.items()}
        loaded.update({name: price(doc) for name, doc in GAMES.items()})
        elsewhere = replay_elsewhere()

        for name in quiet:
            assert loaded[name] == quiet[name], name
            assert input_sha256(loaded[name]) == input_sha256(quiet[name]), name
            assert elsewhere[name] == input_sha256(quiet[name]), name
        assert quiet["welfare automatic pruning"]["pruning"]["automatic"] is True
        assert all(quiet[name]["stopped_by"] != "time_limit" for name in BOOKS if "welfare" in name)


def three_tier_market():
    """60 users over 6 servers; each reaches one server directly and four through one broker."""
    rng = np.random.default_rng(408)
    servers = [Server(f"s{k}", int(rng.integers(3, 9)), float(rng.uniform(0.5, 1.5))) for k in range(6)]
    brokers = [Broker("b", 20, 0.1, ("s0", "s1", "s2", "s3"))]
    users = [
        User(f"u{j}", int(rng.integers(1, 5)), float(np.round(rng.uniform(1, 3), 3)), ("b",), (f"s{j % 6}",))
        for j in range(60)
    ]
    return servers, brokers, users


def broker_book() -> dict:
    """The three-tier market as the round's `brokers` BOOK document."""
    servers, brokers, users = three_tier_market()
    return {
        "mechanism": "brokers",
        "node_limit": 20_000,
        "servers": [{"id": s.id, "capacity": s.capacity, "cost": s.cost} for s in servers],
        "brokers": [
            {"id": b.id, "capacity": b.capacity, "cost": b.cost, "servers": list(b.servers)} for b in brokers
        ],
        "users": [
            {
                "id": u.id,
                "demand": u.demand,
                "value": u.value,
                "brokers": list(u.brokers),
                "direct": list(u.direct),
            }
            for u in users
        ],
    }


class TestBrokerTierUnderLoad:
    def test_the_three_tier_allocation_and_its_dual_prices_are_the_same_under_cpu_load(self, cpu_load):
        quiet = clear_three_tier(*three_tier_market())
        assert cpu_load() >= 2

        loaded = clear_three_tier(*three_tier_market())

        assert loaded == quiet  # routes, payments, welfare, LP bound and every dual, exactly
        assert quiet.status == "optimal" and any(route.broker == "b" for route in quiet.routes)


class TestWorkLimitsNotTime:
    def test_the_automatic_path_gives_the_same_answer_however_fast_the_clock_runs(
        self, monkeypatch, automatic_pruning
    ):
        doc = dict(welfare_auto_book(), time_limit_s=1e9)  # the guard is far away either way
        normal = clear(doc)
        ticks = iter(range(0, 10**9, 30))  # every reading of the clock: 30 s later (a very slow machine)
        monkeypatch.setattr(
            welfare_milp, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
        )

        slow = clear(doc)

        assert slow == normal
        assert normal["pruning"]["per_provider"] == 2  # the second round ran and won, on both clocks

    def test_a_solve_stopped_by_a_work_limit_says_so_and_replays(self, monkeypatch):
        doc = dict(congested_book(60, 6), payment_rule="none")
        full = clear(doc)
        monkeypatch.setattr(welfare_milp, "CORE_SIZE_PER_JOB", 0)  # the first core: the LP rounding only
        monkeypatch.setattr(welfare_milp, "CORE_MAX_ROUNDS", 1)  # and no room to grow it

        first, second = clear(doc), clear(doc)

        assert (full["status"], full["stopped_by"]) == ("optimal", None)
        assert (first["status"], first["stopped_by"]) == ("feasible", "work_limit")
        assert first["welfare"] < full["welfare"]
        assert second == first

    def test_a_wall_clock_stop_keeps_the_rounding_and_says_time_limit(self, monkeypatch):
        doc = dict(congested_book(40, 5), payment_rule="none", time_limit_s=45)
        fast_clock(monkeypatch)  # the LP starts 30 s in (15 s left), the MILP 60 s in (none left)

        result = clear(doc)

        assert result["stopped_by"] == "time_limit"
        assert result["time_cuts"] == [1]  # solve 0 is the LP, solve 1 the first MILP
        assert result["status"] == "feasible"
        assert 0 < result["welfare"] <= result["lp_bound"]


class TestReplayOfAWallClockStop:
    def test_a_replay_cuts_the_recorded_solves_and_gives_the_same_result(self, monkeypatch):
        doc = dict(congested_book(16, 3), payment_rule="vcg", time_limit_s=45)
        with monkeypatch.context() as patch:
            fast_clock(patch)
            original = clear(doc)
        live = clear(doc)  # a quick machine: the guard does not fire, the answer is the optimum

        replayed = clear(doc, replay=original)

        assert original["time_cuts"] and original["stopped_by"] == "time_limit"
        assert live["status"] == "optimal" and live["welfare"] > original["welfare"]
        assert replayed == original
        assert input_sha256(replayed) == input_sha256(original)

    def test_a_replay_is_not_guarded_so_a_slow_machine_replays_a_full_solve(self, monkeypatch):
        doc = dict(congested_book(16, 3), payment_rule="vcg", time_limit_s=45)
        original = clear(doc)
        fast_clock(monkeypatch)  # the replaying machine is so slow that a live run would be cut

        replayed = clear(doc, replay=original)

        assert "time_cuts" not in original and original["status"] == "optimal"
        assert replayed == original
        assert clear(doc)["stopped_by"] == "time_limit"  # what the guard would have done live

    def test_greedy_replays_a_cut_lp_bound(self, monkeypatch):
        doc = dict(congested_book(40, 5), mechanism="greedy", payment_rule="critical", time_limit_s=20)
        with monkeypatch.context() as patch:
            fast_clock(patch)  # the LP starts 30 s in: cut
            original = clear(doc)

        replayed = clear(doc, replay=original)

        assert (original["lp_bound"], original["time_cuts"]) == (None, [0])
        assert replayed == original
        assert clear(doc)["lp_bound"] is not None

    def test_a_list_replays_document_by_document(self, monkeypatch):
        docs = [unit_book("mcafee"), dict(congested_book(40, 5), payment_rule="none", time_limit_s=45)]
        with monkeypatch.context() as patch:
            fast_clock(patch)
            original = clear(docs)

        assert clear(docs, replay=original) == original
        assert original[1]["time_cuts"] == [1]

    @pytest.mark.parametrize(
        "replay",
        [{"time_cuts": [-1]}, {"time_cuts": "1"}, {"time_cuts": [True]}, "result"],
        ids=["negative", "string", "boolean", "not a result"],
    )
    def test_refuses_a_malformed_replay(self, replay):
        with pytest.raises(MechanismError) as raised:
            clear(congested_book(10, 2), replay=replay)

        assert raised.value.code == "bad_input"

    def test_refuses_a_replay_list_of_the_wrong_length(self):
        with pytest.raises(MechanismError) as raised:
            clear([congested_book(10, 2)], replay=[])

        assert raised.value.code == "bad_input"

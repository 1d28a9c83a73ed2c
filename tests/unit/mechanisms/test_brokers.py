"""The broker tier (auctions.mechanisms.brokers): invariants on random three-tier markets (Hypothesis)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import clear
from auctions.mechanisms.brokers import (
    Broker,
    Server,
    User,
    clear_three_tier,
    dual_decomposition,
    without_brokers,
)
from auctions.mechanisms.errors import MechanismError

EXAMPLES = settings(max_examples=150, deadline=None)
EPS = 1e-6


@st.composite
def markets(draw):
    n_servers = draw(st.integers(1, 4))
    servers = [Server(f"s{i}", draw(st.integers(0, 8)), draw(st.integers(0, 6))) for i in range(n_servers)]
    server_ids = [s.id for s in servers]
    brokers = [
        Broker(
            f"b{i}",
            draw(st.integers(0, 10)),
            draw(st.sampled_from([0, 0.5, 1])),
            tuple(draw(st.lists(st.sampled_from(server_ids), max_size=3, unique=True))),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    broker_ids = [b.id for b in brokers]
    users = [
        User(
            f"u{i}",
            draw(st.integers(1, 4)),
            draw(st.integers(0, 12)),
            tuple(draw(st.lists(st.sampled_from(broker_ids), max_size=2, unique=True))) if broker_ids else (),
            tuple(draw(st.lists(st.sampled_from(server_ids), max_size=1, unique=True))),
            draw(st.none() | st.lists(st.sampled_from(server_ids), max_size=3, unique=True).map(tuple)),
        )
        for i in range(draw(st.integers(0, 6)))
    ]
    return servers, brokers, users


class TestClearThreeTier:
    @EXAMPLES
    @given(markets())
    def test_respects_every_capacity_and_serves_each_user_at_most_once(self, market):
        servers, brokers, users = market

        result = clear_three_tier(servers, brokers, users)

        for s in servers:
            assert sum(r.devices for r in result.routes if r.server == s.id) <= s.capacity + EPS
        for b in brokers:
            assert sum(r.devices for r in result.routes if r.broker == b.id) <= b.capacity + EPS
        served = [r.user for r in result.routes]
        assert len(served) == len(set(served))

    @EXAMPLES
    @given(markets())
    def test_trades_only_through_appointed_brokers_to_servers_they_reach(self, market):
        servers, brokers, users = market
        by_id = {u.id: u for u in users}
        reach = {b.id: b.servers for b in brokers}

        result = clear_three_tier(servers, brokers, users)

        for r in result.routes:
            assert by_id[r.user].fits is None or r.server in by_id[r.user].fits
            if r.broker is None:
                assert r.server in by_id[r.user].direct
            else:
                assert r.broker in by_id[r.user].brokers
                assert r.server in reach[r.broker]

    @EXAMPLES
    @given(markets())
    def test_welfare_is_at_most_the_lp_bound_and_at_least_without_brokers(self, market):
        servers, brokers, users = market

        result = clear_three_tier(servers, brokers, users)
        alone = clear_three_tier(servers, brokers, without_brokers(users))

        assert result.status == "optimal"
        assert result.welfare <= result.lp_bound + EPS
        assert result.welfare >= alone.welfare - EPS

    @EXAMPLES
    @given(markets())
    def test_payments_are_individually_rational_and_budget_balanced(self, market):
        servers, brokers, users = market
        value = {u.id: u.value for u in users}
        cost = {s.id: s.cost for s in servers}
        broker_cost = {b.id: b.cost for b in brokers}

        result = clear_three_tier(servers, brokers, users)

        for r in result.routes:
            assert r.user_pays <= r.devices * value[r.user] + EPS
            assert r.server_receives >= r.devices * cost[r.server] - EPS
            if r.broker is None:
                assert r.broker_receives == 0
            else:
                assert r.broker_receives >= r.devices * broker_cost[r.broker] - EPS
            assert math.isclose(r.user_pays, r.server_receives + r.broker_receives, abs_tol=EPS)

    @EXAMPLES
    @given(markets())
    def test_dual_prices_are_non_negative_and_zero_on_slack_capacity(self, market):
        servers, brokers, users = market

        result = clear_three_tier(servers, brokers, users)

        assert all(p >= 0 for p in result.server_prices.values())
        assert all(q >= 0 for q in result.broker_prices.values())
        # Weak duality: the prices value the capacities at least at the LP's welfare.
        dual = (
            sum(result.server_prices[s.id] * s.capacity for s in servers)
            + sum(result.broker_prices[b.id] * b.capacity for b in brokers)
            + sum(result.user_surplus.values())
        )
        assert dual == pytest.approx(result.lp_bound, abs=1e-6)


class TestBrokerWelfare:
    def test_a_broker_reaching_a_cheap_far_server_raises_welfare(self):
        servers = [Server("near", 1, 8), Server("far", 4, 1)]
        brokers = [Broker("b", 4, 0.5, ("far",))]
        users = [User("u", 2, 10, ("b",), ("near",))]

        result = clear_three_tier(servers, brokers, users)
        alone = clear_three_tier(servers, brokers, without_brokers(users))

        assert alone.welfare == 0  # the near server is too small for the user's two devices
        assert result.welfare == pytest.approx(2 * (10 - 1 - 0.5))
        assert [(r.broker, r.server) for r in result.routes] == [("b", "far")]

    def test_the_scarce_broker_earns_its_dual_price(self):
        servers = [Server("s", 10, 1)]
        brokers = [Broker("b", 1, 0, ("s",))]
        users = [User("u1", 1, 5, ("b",)), User("u2", 1, 3, ("b",))]

        result = clear_three_tier(servers, brokers, users)

        assert [r.user for r in result.routes] == ["u1"]
        assert result.broker_prices["b"] == pytest.approx(2)  # the losing user's value net of cost
        assert result.routes[0].user_pays == pytest.approx(3)
        assert result.routes[0].broker_receives == pytest.approx(2)

    def test_refuses_a_negative_capacity(self):
        with pytest.raises(MechanismError) as error:
            clear_three_tier([Server("s", -1, 0)], [], [])

        assert error.value.code == "bad_input"


class TestDualDecomposition:
    @EXAMPLES
    @given(markets())
    def test_its_bound_never_falls_below_the_lp_optimum(self, market):
        servers, brokers, users = market

        result = clear_three_tier(servers, brokers, users)
        dual = dual_decomposition(servers, brokers, users, iterations=200)

        assert dual.bound >= result.lp_bound - 1e-6
        assert all(p >= 0 for p in dual.server_prices.values())

    def test_converges_to_the_scarce_servers_price(self):
        servers = [Server("s", 1, 1)]
        users = [User("u1", 1, 5, (), ("s",)), User("u2", 1, 3, (), ("s",))]

        dual = dual_decomposition(servers, [], users, iterations=5_000)

        assert dual.bound == pytest.approx(4, abs=1e-2)  # the LP optimum: 5 - 1
        assert 2 - 1e-2 <= dual.server_prices["s"] <= 4 + 1e-2  # any price between the two bids (net)


class TestAgreesWithTheWelfareMilp:
    """With no broker and every user reaching every server, the three-tier MILP is the engine's
    `welfare` MILP (auctions.mechanisms.welfare_milp) on the same book: same optimum."""

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(1, 3), st.integers(1, 10)), min_size=1, max_size=6),
        st.lists(st.tuples(st.integers(1, 4), st.integers(0, 6)), min_size=1, max_size=3),
    )
    def test_same_welfare_as_the_welfare_mechanism(self, jobs, hosts):
        servers = [Server(f"p{i}", gpus, ask) for i, (gpus, ask) in enumerate(hosts)]
        ids = tuple(s.id for s in servers)
        users = [User(f"j{i}", gpus, value, (), ids) for i, (gpus, value) in enumerate(jobs)]
        doc = {
            "mechanism": "welfare",
            "payment_rule": "none",
            "jobs": [
                {
                    "id": u.id,
                    "bid": u.value * u.demand,
                    "gpus": u.demand,
                    "vram_per_gpu": 1.0,
                    "vcpu": 0.0,
                    "ram": 0.0,
                    "base_hours": 1.0,
                    "deadline_hours": 10.0,
                }
                for u in users
            ],
            "providers": [
                {
                    "id": s.id,
                    "gpus": s.capacity,
                    "vram_per_gpu": 80.0,
                    "vcpu": 64.0,
                    "ram": 512.0,
                    "speed": 1.0,
                    "ask_per_gpu_hour": s.cost,
                }
                for s in servers
            ],
        }

        three_tier = clear_three_tier(servers, [], users)
        reference = clear(doc)

        assert three_tier.welfare == pytest.approx(reference["welfare"], abs=1e-6)


class TestWorkLimitOnly:
    def test_the_milp_takes_a_node_limit_and_no_clock_limit(self):
        servers = [Server("a", 2, 1)]
        users = [User(u, 1, v, ("b",)) for u, v in (("x", 5), ("y", 4), ("z", 3))]
        brokers = [Broker("b", 9, 0, ("a",))]

        bounded = clear_three_tier(servers, brokers, users, node_limit=0)  # the root node only

        assert bounded == clear_three_tier(servers, brokers, users)
        assert {r.user for r in bounded.routes} == {"x", "y"}
        with pytest.raises(TypeError):
            clear_three_tier(servers, brokers, users, time_limit_s=2.0)

    @pytest.mark.parametrize("limit", [-1, 2.5, True, "100"], ids=["negative", "float", "bool", "string"])
    def test_refuses_a_node_limit_that_is_not_a_whole_number(self, limit):
        with pytest.raises(MechanismError) as error:
            clear_three_tier([Server("a", 2, 1)], [], [User("x", 1, 5, (), ("a",))], node_limit=limit)

        assert error.value.code == "bad_input"


class TestBrokersBookDocument:
    DOC = {
        "mechanism": "brokers",
        "node_limit": 100,
        "servers": [{"id": "a", "capacity": 2, "cost": 1}],
        "brokers": [{"id": "b", "capacity": 9, "cost": 0, "servers": ["a"]}],
        "users": [
            {"id": u, "demand": 1, "value": v, "brokers": ["b"]} for u, v in (("x", 5), ("y", 4), ("z", 3))
        ],
    }

    def test_clears_as_the_engine_does_on_the_same_market(self):
        direct = clear_three_tier(
            [Server("a", 2, 1)],
            [Broker("b", 9, 0, ("a",))],
            [User(u, 1, v, ("b",)) for u, v in (("x", 5), ("y", 4), ("z", 3))],
        )

        result = clear(self.DOC)

        assert result["assignments"] == {r.user: r.server for r in direct.routes} == {"x": "a", "y": "a"}
        assert result["routes"] == {"x": "b", "y": "b"}
        assert result["payments"] == {r.user: r.user_pays for r in direct.routes}
        assert result["welfare"] == direct.welfare and result["traded_quantity"] == 2

    @pytest.mark.parametrize(
        "change",
        [
            lambda d: d.update(node_limit=-1),
            lambda d: d.update(node_limit=None),
            lambda d: d.update(servers="a"),
            lambda d: d["users"][0].update(value="5"),
            lambda d: d["users"][0].update(brokers="b"),
            lambda d: d["brokers"][0].pop("servers"),
        ],
        ids=[
            "negative node limit",
            "no node limit",
            "servers not a list",
            "string value",
            "brokers not a list",
            "missing servers",
        ],
    )
    def test_refuses_a_malformed_document(self, change):
        doc = {**self.DOC, "servers": [dict(s) for s in self.DOC["servers"]]}
        doc["brokers"] = [dict(b) for b in self.DOC["brokers"]]
        doc["users"] = [dict(u) for u in self.DOC["users"]]
        change(doc)

        with pytest.raises(MechanismError) as error:
            clear(doc)

        assert error.value.code == "bad_input"

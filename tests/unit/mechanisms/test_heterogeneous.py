"""Heterogeneous clearing (`welfare` MILP + VCG, `greedy` + critical values) against hand-derived answers
and brute force. Hypothesis settings: 60 examples for MILP vs brute force, 40 for greedy critical values."""

import itertools
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, clear


def job(id, bid, gpus=1, vram=16.0, vcpu=2.0, ram=16.0, base=1.0, deadline=10.0):
    return {
        "id": id,
        "bid": bid,
        "gpus": gpus,
        "vram_per_gpu": vram,
        "vcpu": vcpu,
        "ram": ram,
        "base_hours": base,
        "deadline_hours": deadline,
    }


def provider(id, gpus=1, vram=80.0, vcpu=16.0, ram=128.0, speed=1.0, ask=1.0):
    return {
        "id": id,
        "gpus": gpus,
        "vram_per_gpu": vram,
        "vcpu": vcpu,
        "ram": ram,
        "speed": speed,
        "ask_per_gpu_hour": ask,
    }


def book(jobs, providers, mechanism="welfare", rule="vcg", **extra):
    return {"mechanism": mechanism, "payment_rule": rule, "jobs": jobs, "providers": providers, **extra}


def hand_book(mechanism="welfare", rule="vcg"):
    """Derivation (kappa = ask * gpus * base / speed, w = bid - kappa):
    P1: 2 GPUs, 80 GB, speed 1, ask 1.  P2: 1 GPU, 24 GB, speed 2, ask 2.
    J1 (bid 10, 2 GPUs, 40 GB, 2 h): P1 kappa 4, w 6; P2 too small.
    J2 (bid 5, 1 GPU, 2 h):          P1 kappa 2, w 3; P2 kappa 2, w 3.
    J3 (bid 4.5, 1 GPU, 1 h):        P1 kappa 1, w 3.5; P2 kappa 1, w 3.5.
    Enumerating the 3 x 3 x 2 feasible assignments: J1->P1 and J3->P2 give W* = 9.5 (J2 loses).
    Without J1: J2->P1, J3->P2 = 6.5, so J1 pays 10 - (9.5 - 6.5) = 7. Without J3: J1->P1, J2->P2 = 9,
    so J3 pays 4.5 - 0.5 = 4. Without P1: J3 alone = 3.5, P1 gets 4 + 6 = 10. Without P2: J2 and J3
    share P1 = 6.5, P2 gets 1 + 3 = 4. Surplus 11 - 14 = -3 (VCG runs a deficit).
    """
    jobs = [
        job("J1", 10.0, gpus=2, vram=40.0, vcpu=4.0, ram=32.0, base=2.0, deadline=5.0),
        job("J2", 5.0, base=2.0, deadline=3.0),
        job("J3", 4.5, base=1.0, deadline=1.0),
    ]
    providers = [
        provider("P1", gpus=2, vram=80.0, vcpu=16.0, ram=128.0),
        provider("P2", gpus=1, vram=24.0, vcpu=8.0, ram=64.0, speed=2.0, ask=2.0),
    ]
    return book(jobs, providers, mechanism, rule)


def assert_plain_json(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert value is None or type(value) in (str, float, int, bool)


def brute_force(doc, without=frozenset()):
    """Best welfare over every assignment (each job: nothing or one provider), agents in `without` removed."""
    jobs = [j for j in doc["jobs"] if j["id"] not in without]
    providers = [p for p in doc["providers"] if p["id"] not in without]
    options = []
    for j in jobs:
        choices = [None]
        for k, p in enumerate(providers):
            tau = j["base_hours"] / p["speed"]
            w = j["bid"] - p["ask_per_gpu_hour"] * j["gpus"] * tau
            if (
                j["vram_per_gpu"] <= p["vram_per_gpu"]
                and j["gpus"] <= p["gpus"]
                and tau <= j["deadline_hours"]
                and w > 0
            ):
                choices.append((k, w))
        options.append(choices)
    best = 0.0
    for combo in itertools.product(*options):
        load = [[0.0, 0.0, 0.0] for _ in providers]
        total = 0.0
        for j, choice in zip(jobs, combo, strict=True):
            if choice is None:
                continue
            k, w = choice
            total += w
            for r, field in enumerate(("gpus", "vcpu", "ram")):
                load[k][r] += j[field]
        if all(
            load[k][r] <= providers[k][f]
            for k in range(len(providers))
            for r, f in enumerate(("gpus", "vcpu", "ram"))
        ):
            best = max(best, total)
    return best


@st.composite
def small_books(draw, max_jobs=6, max_providers=3):
    n_jobs = draw(st.integers(0, max_jobs))
    n_providers = draw(st.integers(1, max_providers))
    money = st.floats(0.5, 20.0, allow_nan=False).map(lambda x: round(x, 2))
    jobs = [
        job(
            f"j{i}",
            draw(money),
            gpus=draw(st.integers(1, 3)),
            vram=draw(st.sampled_from([16.0, 24.0, 80.0])),
            vcpu=draw(st.sampled_from([1.0, 2.0, 4.0])),
            ram=draw(st.sampled_from([8.0, 16.0, 64.0])),
            base=draw(st.sampled_from([0.5, 1.0, 2.0])),
            deadline=draw(st.sampled_from([0.5, 1.0, 4.0])),
        )
        for i in range(n_jobs)
    ]
    providers = [
        provider(
            f"p{k}",
            gpus=draw(st.integers(1, 4)),
            vram=draw(st.sampled_from([24.0, 80.0])),
            vcpu=draw(st.sampled_from([4.0, 8.0])),
            ram=draw(st.sampled_from([32.0, 128.0])),
            speed=draw(st.sampled_from([0.5, 1.0, 2.0])),
            ask=draw(st.sampled_from([0.5, 1.0, 2.0])),
        )
        for k in range(n_providers)
    ]
    return jobs, providers


class TestWelfareHandExample:
    def test_finds_the_optimum_derived_by_hand(self):
        doc = hand_book()

        result = clear(doc)

        assert result["status"] == "optimal"
        assert result["assignments"] == {"J1": "P1", "J3": "P2"}
        assert result["welfare"] == pytest.approx(9.5)
        assert result["lp_bound"] >= 9.5 - 1e-9

    def test_charges_vcg_payments_derived_by_hand(self):
        doc = hand_book()

        result = clear(doc)

        assert result["payments"] == pytest.approx({"J1": 7.0, "J3": 4.0})
        assert result["receipts"] == pytest.approx({"P1": 10.0, "P2": 4.0})
        assert result["surplus"] == pytest.approx(-3.0)

    def test_reports_the_hash_and_a_plain_json_document(self):
        doc = hand_book()

        result = clear(doc, input_sha256="abc")

        assert result["input_sha256"] == "abc"
        assert_plain_json(result)
        json.dumps(result, allow_nan=False)

    def test_lists_no_payments_under_payment_rule_none(self):
        doc = hand_book(rule="none")

        result = clear(doc)

        assert result["assignments"] == {"J1": "P1", "J3": "P2"}
        assert (result["payments"], result["receipts"], result["surplus"]) == ({}, {}, 0.0)


class TestWelfareCompatibility:
    @pytest.mark.parametrize(
        "changes",
        [{"vram": 48.0}, {"gpus": 2}, {"deadline": 0.9}, {"bid": 1.0}],
        ids=["vram per GPU too large", "too many GPUs", "deadline too short", "bid not above cost"],
    )
    def test_never_assigns_an_incompatible_pair(self, changes):
        # One 24 GB GPU at speed 1, ask 1; the job runs 1 h, so its cost is 1.
        arguments = {"bid": 5.0, "gpus": 1, "vram": 16.0, "base": 1.0, "deadline": 2.0, **changes}
        doc = book([job("J", **arguments)], [provider("P", gpus=1, vram=24.0)])

        result = clear(doc)

        assert result["assignments"] == {}
        assert result["welfare"] == 0.0

    def test_respects_vcpu_and_ram_as_additive_capacities(self):
        # Two jobs fit the GPUs but only one fits the 4 vCPUs.
        doc = book([job("A", 5.0, vcpu=3.0), job("B", 4.0, vcpu=3.0)], [provider("P", gpus=2, vcpu=4.0)])

        result = clear(doc)

        assert result["assignments"] == {"A": "P"}

    def test_clears_an_empty_book_to_no_trade(self):
        doc = book([], [provider("P")])

        result = clear(doc)

        assert (result["status"], result["assignments"], result["welfare"], result["lp_bound"]) == (
            "optimal",
            {},
            0.0,
            0.0,
        )


class TestWelfareAgainstBruteForce:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(small_books())
    def test_milp_welfare_equals_the_enumerated_optimum(self, instance):
        jobs, providers = instance
        doc = book(jobs, providers, rule="none")

        result = clear(doc)

        assert result["welfare"] == pytest.approx(brute_force(doc), abs=1e-6)
        assert result["lp_bound"] >= result["welfare"] - 1e-6

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(small_books(max_jobs=5))
    def test_vcg_payments_equal_enumerated_marginal_contributions_and_are_individually_rational(
        self, instance
    ):
        jobs, providers = instance
        doc = book(jobs, providers)
        optimum = brute_force(doc)

        result = clear(doc)

        bids = {j["id"]: j["bid"] for j in jobs}
        for job_id, paid in result["payments"].items():
            assert paid == pytest.approx(bids[job_id] - (optimum - brute_force(doc, {job_id})), abs=1e-6)
            assert paid <= bids[job_id] + 1e-9
        for provider_id, received in result["receipts"].items():
            cost = sum(
                p["ask_per_gpu_hour"] * j["gpus"] * j["base_hours"] / p["speed"]
                for j in jobs
                for p in providers
                if result["assignments"].get(j["id"]) == provider_id and p["id"] == provider_id
            )
            assert received >= cost - 1e-9
            assert received == pytest.approx(cost + optimum - brute_force(doc, {provider_id}), abs=1e-6)


class TestWelfareTimeLimit:
    def test_reports_time_limit_when_stopped_without_a_solution(self):
        # 300 jobs x 15 providers with binding GPU and RAM capacities: no incumbent within 2 ms.
        jobs = [
            job(
                f"j{i}",
                5.0 + (i * 37 % 101) / 7,
                gpus=1 + i % 3,
                ram=16.0 * (1 + i % 4),
                base=1.0 + (i % 5) / 2,
            )
            for i in range(300)
        ]
        providers = [
            provider(f"p{k}", gpus=2 + k % 4, ram=64.0 + 32 * (k % 3), speed=1.0 + k / 10) for k in range(15)
        ]
        doc = book(jobs, providers, rule="none", time_limit_s=0.002)

        with pytest.raises(MechanismError) as raised:
            clear(doc)

        assert raised.value.code == "time_limit"


class TestWelfarePruning:
    def test_keeps_the_exact_answer_when_every_pair_survives(self):
        doc = hand_book(rule="none")
        pruned = dict(doc, pruning={"per_provider": 3})

        result = clear(pruned)

        assert result["welfare"] == pytest.approx(9.5)
        assert result["pruning"] == {"per_provider": 3, "pairs": 5, "pairs_total": 5}

    def test_keeps_each_providers_best_jobs_by_net_value(self):
        # P1's best job is J1 (w 6) and P2's is J3 (w 3.5): one per provider keeps exactly the optimum.
        doc = dict(hand_book(rule="none"), pruning={"per_provider": 1})

        result = clear(doc)

        assert result["assignments"] == {"J1": "P1", "J3": "P2"}
        assert result["pruning"]["pairs"] == 2


class TestGreedyHandExample:
    def test_orders_by_density_and_takes_the_cheapest_provider_with_room(self):
        """Cap = (3 GPUs, 24 vCPU, 192 GB). J1 needs (2, 4, 32): shares 2/3 + 1/6 + 1/6 = 1, rho = 10.
        J2 and J3 need (1, 2, 16): shares 1/2, s = 0.7071, rho = 7.071 and 6.364. J1 -> P1 (only fit),
        J2 -> P2 (P1 full), J3 finds no room: welfare 6 + 3 = 9."""
        doc = hand_book("greedy", "critical")

        result = clear(doc)

        assert result["status"] == "feasible"
        assert result["assignments"] == {"J1": "P1", "J2": "P2"}
        assert result["welfare"] == pytest.approx(9.0)

    def test_charges_critical_values_derived_by_hand(self):
        """J1 must stay ahead of J2: below density 7.071 (bid 5 sqrt 2) J2 comes first and takes P1 (a cost
        tie with P2, input order), leaving one GPU. J2 must stay ahead of J3 (bid 4.5 at equal size):
        behind J3 both providers are full. Providers get their costs 4 and 2."""
        doc = hand_book("greedy", "critical")

        result = clear(doc)

        assert result["payments"] == pytest.approx({"J1": 5 * math.sqrt(2), "J2": 4.5})
        assert result["receipts"] == pytest.approx({"P1": 4.0, "P2": 2.0})
        assert result["surplus"] == pytest.approx(5 * math.sqrt(2) + 4.5 - 6.0)


def rebid(doc, job_id, bid):
    return dict(doc, jobs=[dict(j, bid=bid) if j["id"] == job_id else j for j in doc["jobs"]])


class TestGreedyCriticalValues:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(small_books(max_jobs=8))
    def test_a_winner_wins_just_above_its_critical_value_and_loses_just_below(self, instance):
        jobs, providers = instance
        doc = book(jobs, providers, "greedy", "critical")

        result = clear(doc)

        for job_id, critical in result["payments"].items():
            above = clear(rebid(doc, job_id, critical * (1 + 1e-7) + 1e-9))
            assert job_id in above["assignments"]
            if critical > 1e-6:
                below = clear(rebid(doc, job_id, critical * (1 - 1e-7) - 1e-9))
                assert job_id not in below["assignments"]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(small_books(max_jobs=8))
    def test_payments_are_individually_rational_and_cover_the_providers(self, instance):
        jobs, providers = instance
        doc = book(jobs, providers, "greedy", "critical")

        result = clear(doc)

        bids = {j["id"]: j["bid"] for j in jobs}
        assert set(result["payments"]) == set(result["assignments"])
        for job_id, paid in result["payments"].items():
            assert paid <= bids[job_id] + 1e-9
        assert result["surplus"] >= -1e-9
        assert result["welfare"] <= brute_force(book(jobs, providers)) + 1e-9


class TestValidation:
    @pytest.mark.parametrize(
        "mutate",
        [
            lambda d: d["jobs"][0].pop("bid"),
            lambda d: d["jobs"][0].update(bid="5"),
            lambda d: d["jobs"][0].update(bid=True),
            lambda d: d["jobs"][0].update(bid=float("nan")),
            lambda d: d["jobs"][0].update(ram=float("inf")),
            lambda d: d["jobs"][0].update(vcpu=-1.0),
            lambda d: d["jobs"][0].update(gpus=1.5),
            lambda d: d["jobs"][0].update(gpus=0),
            lambda d: d["providers"][0].update(speed=0.0),
            lambda d: d["providers"][0].update(id="J1"),
            lambda d: d["jobs"][1].update(id="J1"),
            lambda d: d["jobs"][0].update(id=None),
            lambda d: d.update(payment_rule="critical"),
            lambda d: d.update(payment_rule="pay_as_bid"),
            lambda d: d.pop("payment_rule"),
            lambda d: d.update(jobs={"J1": 1}),
            lambda d: d.update(time_limit_s=0),
            lambda d: d.update(pruning={"per_job": 3}),
        ],
        ids=[
            "missing bid",
            "string bid",
            "boolean bid",
            "NaN bid",
            "infinite ram",
            "negative vcpu",
            "fractional gpus",
            "zero gpus",
            "zero speed",
            "id shared across sides",
            "id repeated among jobs",
            "null id",
            "welfare with critical",
            "unknown payment rule",
            "no payment rule",
            "jobs not a list",
            "zero time limit",
            "per-job pruning",
        ],
    )
    def test_refuses_bad_books_with_bad_input(self, mutate):
        doc = hand_book()
        mutate(doc)

        with pytest.raises(MechanismError) as raised:
            clear(doc)

        assert raised.value.code == "bad_input"

    def test_refuses_greedy_with_vcg(self):
        doc = hand_book("greedy", "vcg")

        with pytest.raises(MechanismError) as raised:
            clear(doc)

        assert raised.value.code == "bad_input"

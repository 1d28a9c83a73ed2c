"""SLA breach detection (auctions.mechanisms.sla): percentiles and the breaches of a lease's terms."""

from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms.sla import (
    ALPHA,
    MIN_SAMPLES,
    binomial_tail,
    breaches,
    detection_scores,
    exceedances_needed,
    percentile,
)

TERMS = {
    "latency_p95_ms": 100,
    "min_quality": "0.9",
    "latency_penalty_rate": "0.2",
    "deadline_penalty_rate": None,
    "quality_penalty_rate": "0.5",
}


class TestPercentile:
    def test_nearest_rank(self):
        samples = [float(x) for x in range(1, 101)]
        assert percentile(samples, 50) == 50.0
        assert percentile(samples, 95) == 95.0

    def test_none_without_samples(self):
        assert percentile([], 95) is None

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=50))
    def test_lies_between_the_extremes_and_p50_below_p95(self, samples):
        assert min(samples) <= percentile(samples, 50) <= percentile(samples, 95) <= max(samples)


class TestBreaches:
    def test_a_p95_above_the_bound_is_a_latency_breach_at_its_rate(self):
        found = breaches(
            terms=TERMS, rtt_ms=[50.0] * 14 + [300.0] * 6, late_by_s=None, quality=None, default_rate=0.1
        )

        assert [(b.kind, b.measured, b.rate) for b in found] == [("latency", 300.0, 0.2)]

    def test_a_sample_p95_over_the_bound_by_chance_is_no_breach(self):
        # 2 of 20 over the bound: the sample p95 is 300 ms, but a link whose p95 is the bound gives
        # 2 or more of 20 over it with probability 0.26: not proven.
        assert (
            breaches(
                terms=TERMS, rtt_ms=[50.0] * 18 + [300.0] * 2, late_by_s=None, quality=None, default_rate=0.1
            )
            == []
        )

    def test_the_exceedances_needed_follow_the_binomial_tail(self):
        assert [exceedances_needed(n) for n in (5, 10, 20, 40)] == [3, 4, 5, 7]

    @settings(max_examples=50, deadline=None)
    @given(st.integers(min_value=MIN_SAMPLES, max_value=200))
    def test_the_test_never_charges_a_link_at_its_bound_more_often_than_alpha(self, n):
        assert binomial_tail(n, exceedances_needed(n), 0.05) <= ALPHA

    def test_a_few_slow_probes_under_the_p95_are_no_breach(self):
        assert (
            breaches(
                terms=TERMS, rtt_ms=[50.0] * 39 + [900.0], late_by_s=None, quality=None, default_rate=0.1
            )
            == []
        )

    def test_too_few_samples_prove_nothing(self):
        assert (
            breaches(
                terms=TERMS,
                rtt_ms=[900.0] * (MIN_SAMPLES - 1),
                late_by_s=None,
                quality=None,
                default_rate=0.1,
            )
            == []
        )

    def test_late_completion_breaches_at_the_default_rate_when_the_contract_sets_none(self):
        found = breaches(terms=TERMS, rtt_ms=[], late_by_s=12.0, quality=None, default_rate=0.1)

        assert [(b.kind, b.rate) for b in found] == [("deadline", 0.1)]

    def test_quality_below_the_minimum_breaches(self):
        found = breaches(terms=TERMS, rtt_ms=[], late_by_s=-5.0, quality=0.5, default_rate=0.1)

        assert [(b.kind, b.measured, b.bound, b.rate) for b in found] == [("quality", 0.5, 0.9, 0.5)]


class TestDetectionScores:
    def test_precision_and_recall(self):
        scores = detection_scores({1, 2, 3, 4}, {2, 3, 4, 5})

        assert (scores["precision"], scores["recall"], scores["hits"]) == (0.75, 0.75, 3)

"""Backup pool (standby choice): properties on random books (Hypothesis) and worked examples."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, clear
from auctions.mechanisms.canonical import canonical_json

EXAMPLES = settings(max_examples=300, deadline=None)


@st.composite
def books(draw):
    asks = [
        {
            "id": f"r{i}",
            "price": draw(st.integers(min_value=0, max_value=5)),
            "quantity": draw(st.integers(min_value=0, max_value=3)),
        }
        for i in range(draw(st.integers(min_value=0, max_value=6)))
    ]
    names = [a["id"] for a in asks]
    jobs = [
        {
            "id": f"j{i}",
            "devices": draw(st.integers(min_value=1, max_value=3)),
            "accepts": draw(st.lists(st.sampled_from(names), unique=True)) if names else [],
        }
        for i in range(draw(st.integers(min_value=0, max_value=8)))
    ]
    share = draw(st.sampled_from([0, 0.25, 0.5, 0.75, 1]))
    return {"mechanism": "backup_pool", "share": share, "jobs": jobs, "asks": asks}


def left_after(book, result) -> dict:
    return {a["id"]: a["quantity"] - result["held"].get(a["id"], 0) for a in book["asks"]}


class TestBackupPoolProperties:
    @EXAMPLES
    @given(books())
    def test_every_standby_is_accepted_by_its_job_and_priced_at_its_ask(self, book):
        result = clear(book)

        jobs = {j["id"]: j for j in book["jobs"]}
        asks = {a["id"]: a for a in book["asks"]}
        for job, ask in result["standbys"].items():
            assert ask in jobs[job]["accepts"]
            assert result["prices"][job] == asks[ask]["price"]

    @EXAMPLES
    @given(books())
    def test_no_ask_holds_more_than_its_devices_and_the_pool_holds_at_most_its_share(self, book):
        result = clear(book)

        devices = {j["id"]: j["devices"] for j in book["jobs"]}
        held: dict = {}
        for job, ask in result["standbys"].items():
            held[ask] = held.get(ask, 0) + devices[job]
        assert held == result["held"]
        assert all(v >= 0 for v in left_after(book, result).values())
        total = sum(a["quantity"] for a in book["asks"])
        assert result["capacity"] == math.floor(book["share"] * total + 1e-9)
        assert result["reserved_devices"] == sum(held.values()) <= result["capacity"]

    @EXAMPLES
    @given(books())
    def test_a_job_left_without_standby_had_no_room_and_none_was_given_a_dearer_device_than_needed(
        self, book
    ):
        result = clear(book)

        left = left_after(book, result)
        prices = {a["id"]: a["price"] for a in book["asks"]}
        for job in book["jobs"]:
            chosen = result["standbys"].get(job["id"])
            fits_now = [a for a in job["accepts"] if left[a] >= job["devices"]]
            if chosen is None:
                # Devices left only shrink and the pool only fills as jobs are served, so room at the
                # end would have been room at the job's turn.
                assert not fits_now or result["reserved_devices"] + job["devices"] > result["capacity"]
            else:
                assert all(prices[a] >= prices[chosen] for a in fits_now)

    @EXAMPLES
    @given(books())
    def test_deterministic_and_the_same_after_a_json_round_trip(self, book):
        first = clear(book)

        again = clear(json.loads(canonical_json(book)))

        assert again == first
        assert clear([book], replay=[first]) == [first]


class TestBackupPoolExamples:
    def test_the_oldest_job_takes_the_cheapest_fitting_device_while_the_share_allows(self):
        book = {
            "mechanism": "backup_pool",
            "share": 0.5,
            "jobs": [
                {"id": "j1", "devices": 1, "accepts": ["r1", "r2"]},
                {"id": "j2", "devices": 2, "accepts": ["r1"]},
                {"id": "j3", "devices": 1, "accepts": ["r1", "r2"]},
                {"id": "j4", "devices": 1, "accepts": ["r2"]},
            ],
            "asks": [{"id": "r1", "price": 0.5, "quantity": 2}, {"id": "r2", "price": 0.2, "quantity": 4}],
        }

        result = clear(book)

        # capacity floor(0.5 x 6) = 3: j1 takes r2 (cheaper), j2 takes both of r1, j3 finds the pool full.
        assert result["capacity"] == 3
        assert result["standbys"] == {"j1": "r2", "j2": "r1"}
        assert result["held"] == {"r2": 1, "r1": 2}
        assert result["reserved_devices"] == 3

    def test_a_share_of_zero_holds_nothing(self):
        book = {
            "mechanism": "backup_pool",
            "share": 0,
            "jobs": [{"id": "j1", "devices": 1, "accepts": ["r1"]}],
            "asks": [{"id": "r1", "price": 1, "quantity": 9}],
        }

        assert clear(book)["standbys"] == {}

    @pytest.mark.parametrize(
        "change",
        [
            {"share": 1.5},
            {"share": True},
            {"jobs": [{"id": "j1", "devices": 0, "accepts": []}]},
            {"jobs": [{"id": "j1", "devices": 1, "accepts": ["r9"]}]},
            {"asks": [{"id": "r1", "price": -1, "quantity": 1}]},
            {"asks": [{"id": "r1", "price": 1, "quantity": 1}, {"id": "r1", "price": 1, "quantity": 1}]},
        ],
    )
    def test_refuses_a_malformed_book(self, change):
        book = {"mechanism": "backup_pool", "share": 0.5, "jobs": [], "asks": [], **change}

        with pytest.raises(MechanismError) as error:
            clear(book)

        assert error.value.code == "bad_input"

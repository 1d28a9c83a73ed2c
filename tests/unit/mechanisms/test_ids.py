"""Order ids: string ids clear exactly as integer ids do, and a repeat is refused alike in every form.

The same book is written with integer ids and with string ids (a bijective renaming), each as NumPy
arrays, as lists, and (strings) as object arrays; the results must be the renamed integer result, and
`input_sha256` must not depend on the in-process form. Issue 13: NumPy string ids are checked for
repeats by a vectorised hash (`order_book._strings_are_distinct`), integers by bincount or sorting.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.mechanisms import MechanismError, clear, order_book

MECHANISMS = ["mcafee", "trade_reduction", "vcg", "sbba", "sbba_buyer_lottery", "huang"]
EXAMPLES = settings(max_examples=200, deadline=None)

integer_ids = st.integers(min_value=-(2**63), max_value=2**64 - 1)
# NumPy strings cannot end with NUL (it is their padding), so a list id ending with one is another id.
string_ids = st.text(st.characters(codec="utf-8"), max_size=9).filter(lambda text: not text.endswith("\0"))


@st.composite
def books(draw):
    """A book with integer ids and the same book with string ids, with the renaming between them."""
    bid_count = draw(st.integers(min_value=0, max_value=9))
    ask_count = draw(st.integers(min_value=0, max_value=9))
    total = bid_count + ask_count
    # int64 or uint64 ids only, as one NumPy integer array can hold them
    low = draw(st.sampled_from([-(2**63), 0]))
    numbers = draw(
        st.lists(
            integer_ids.filter(lambda n: low <= n < low + 2**64), min_size=total, max_size=total, unique=True
        )
    )
    names = draw(st.lists(string_ids, min_size=total, max_size=total, unique=True))
    orders = st.tuples(st.integers(min_value=0, max_value=12), st.integers(min_value=0, max_value=3))
    bids = draw(st.lists(orders, min_size=bid_count, max_size=bid_count))
    asks = draw(st.lists(orders, min_size=ask_count, max_size=ask_count))
    mechanism = draw(st.sampled_from(MECHANISMS))
    seed = draw(st.integers(min_value=0, max_value=2**32))

    def book(ids):
        return {
            "mechanism": mechanism,
            "seed": seed,
            "bids": {"id": ids[:bid_count], "price": [p for p, _ in bids], "quantity": [q for _, q in bids]},
            "asks": {"id": ids[bid_count:], "price": [p for p, _ in asks], "quantity": [q for _, q in asks]},
        }

    return book(numbers), book(names), dict(zip(numbers, names, strict=True))


def forms(doc, *, strings: bool) -> dict:
    """The book's id columns as lists, as NumPy arrays (and as object arrays for strings), and mixed."""

    def with_ids(convert_bids, convert_asks):
        return dict(
            doc,
            bids=dict(doc["bids"], id=convert_bids(doc["bids"]["id"])),
            asks=dict(doc["asks"], id=convert_asks(doc["asks"]["id"])),
        )

    def array(ids):
        if strings:
            return np.array(ids, dtype=str)
        return np.array(ids, dtype=np.uint64 if any(i > 2**63 - 1 for i in ids) else np.int64)

    out = {"lists": doc, "arrays": with_ids(array, array), "array beside a list": with_ids(array, list)}
    if strings:
        out["object arrays"] = with_ids(
            lambda ids: np.array(ids, dtype=object), lambda ids: np.array(ids, dtype=object)
        )
    return out


def renamed(result: dict, names: dict) -> dict:
    out = dict(result)
    for key in ("fills", "payments"):
        out[key] = {names[name]: value for name, value in result[key].items()}
    if "lottery" in result:
        out["lottery"] = dict(result["lottery"], pool=[names[name] for name in result["lottery"]["pool"]])
    return out


def outcome(doc):
    """The result, or the error's code and message."""
    try:
        return clear(doc)
    except MechanismError as error:
        return (error.code, error.message)


class TestStringIdsClearAsIntegerIds:
    @EXAMPLES
    @given(books())
    def test_every_form_gives_the_renamed_integer_result_and_one_hash_per_book(self, drawn):
        integers, strings, names = drawn

        integer_results = [clear(doc) for doc in forms(integers, strings=False).values()]
        string_results = [clear(doc) for doc in forms(strings, strings=True).values()]

        assert all(result == integer_results[0] for result in integer_results)
        assert all(result == string_results[0] for result in string_results)
        expected = renamed(integer_results[0], names)
        expected.pop("input_sha256")
        assert {key: value for key, value in string_results[0].items() if key != "input_sha256"} == expected

    @EXAMPLES
    @given(books(), st.data())
    def test_a_repeated_id_is_refused_alike_in_every_form(self, drawn, data):
        integers, strings, names = drawn
        total = len(names)
        if total < 2:
            return
        source = data.draw(st.integers(min_value=0, max_value=total - 1))
        target = data.draw(st.integers(min_value=0, max_value=total - 1).filter(lambda i: i != source))
        bid_count = len(integers["bids"]["id"])
        for doc in (integers, strings):
            ids = doc["bids"]["id"] + doc["asks"]["id"]
            ids[target] = ids[source]
            doc["bids"]["id"], doc["asks"]["id"] = ids[:bid_count], ids[bid_count:]
        repeated = (integers["bids"]["id"] + integers["asks"]["id"])[max(source, target)]

        integer_outcomes = [outcome(doc) for doc in forms(integers, strings=False).values()]
        string_outcomes = [outcome(doc) for doc in forms(strings, strings=True).values()]

        assert integer_outcomes == [("bad_input", f"id {repeated!r} is repeated")] * len(integer_outcomes)
        assert string_outcomes == [("bad_input", f"id {names[repeated]!r} is repeated")] * len(
            string_outcomes
        )


def _side(ids):
    return {"id": ids, "price": np.arange(len(ids), dtype=float)}


def _clear(bid_ids, ask_ids, mechanism="vcg"):
    return clear({"mechanism": mechanism, "bids": _side(bid_ids), "asks": _side(ask_ids)})


class TestNumpyStringIds:
    @pytest.mark.parametrize(
        ("bid_ids", "ask_ids"),
        [
            (np.array(["a", "xyzzy12345"]), np.array(["a"])),  # widths 10 and 1
            (np.array(["b0", "b1", "b2", "b1"]), np.array(["s0"])),  # within a side, even width
            (np.array(["b1"]), np.array(["s0", "b1", "s2"], dtype=">U7")),  # big-endian beside native
            (np.array(["x", "b1", "y", "b1"])[1::2], np.array(["s"])),  # a strided view
            (np.array(["zz", "b1", "b2"])[1:], np.array(["zz", "b2"])[1:]),  # views past their start
            (np.array(["é€😀"]), np.array(["q", "é€😀"])),  # beyond ASCII and the BMP
            (np.array(["a\0b"]), np.array(["a\0b"])),  # a NUL inside an id
        ],
        ids=[
            "widths differ",
            "within a side",
            "byte orders differ",
            "strided",
            "offset",
            "unicode",
            "inner nul",
        ],
    )
    def test_refuses_a_repeat_in_any_layout(self, bid_ids, ask_ids):
        with pytest.raises(MechanismError) as caught:
            _clear(bid_ids, ask_ids)

        assert caught.value.code == "bad_input" and "is repeated" in caught.value.message

    def test_tells_ids_apart_that_differ_in_one_code_point_anywhere(self):
        base = "abcdefghijk"
        variants = [base[:i] + "Z" + base[i + 1 :] for i in range(len(base))] + [base, base[:-1], "a"]

        result = _clear(np.array(variants[:5]), np.array(variants[5:]))

        assert result["efficient_trades"] >= 1

    def test_the_hash_settles_a_large_book_of_distinct_round_names_without_the_set(self):
        bids = np.array([f"j{i}" for i in range(200_000)])
        asks = np.array([f"r{i}" for i in range(20_000)])

        assert order_book._arrays_are_distinct(bids, asks)
        assert order_book._arrays_are_distinct(bids.astype("U30"), asks)  # a wide dtype, mostly padding
        assert not order_book._arrays_are_distinct(bids, np.array(["r1", "j199999"]))

    def test_hashes_a_wide_dtype_up_to_its_longest_id_wherever_it_is(self):
        ids = np.array(["j0"] * 20_000 + ["a-long-id-in-the-middle"] + ["j1"] * 20_000, dtype="U40")
        ids[1:20_000] = [f"j{i}" for i in range(1, 20_000)]
        ids[20_001:] = [f"k{i}" for i in range(20_000)]

        assert order_book._used_width(ids) == len("a-long-id-in-the-middle")
        assert order_book._arrays_are_distinct(ids, np.array(["a-long-id-in-the-middlf"]))
        with pytest.raises(MechanismError, match="'a-long-id-in-the-middle' is repeated"):
            _clear(ids, np.array(["a-long-id-in-the-middle"]))

    def test_a_hash_collision_costs_time_never_a_wrong_answer(self, monkeypatch):
        monkeypatch.setattr(
            order_book, "_string_hashes", lambda ids, width: np.zeros(len(ids), dtype=np.uint64)
        )

        assert _clear(np.array(["b0", "b1"]), np.array(["s0"]))["fills"]
        with pytest.raises(MechanismError, match="'b1' is repeated"):
            _clear(np.array(["b0", "b1"]), np.array(["b1"]))


class TestNumpyIntegerIds:
    def test_mixes_uint64_and_negative_int64_ids(self):
        result = _clear(np.array([0, 5], dtype=np.uint64), np.array([-1]))

        assert set(result["fills"]) <= {0, 5, -1}

    def test_refuses_a_repeat_across_uint64_and_int64_ids(self):
        with pytest.raises(MechanismError) as caught:
            _clear(np.array([3, 2**40], dtype=np.uint64), np.array([-7, 2**40]))

        assert caught.value.code == "bad_input"

    def test_accepts_ids_spanning_negative_int64_and_large_uint64(self):
        result = _clear(np.array([2**64 - 1], dtype=np.uint64), np.array([-1]))

        assert result["fills"] == {2**64 - 1: 1, -1: 1}

    @pytest.mark.parametrize(
        "ask_ids",
        [np.array([10**15, 10**15 + 1], dtype=np.uint64), np.array([-(10**15), 10**15 + 1])],
        ids=["sparse uint64", "sparse int64"],
    )
    def test_refuses_a_repeat_in_a_sparse_range_by_sorting(self, ask_ids):
        with pytest.raises(MechanismError, match=f"id {10**15 + 1} is repeated"):
            _clear(np.array([7, 10**15 + 1]), ask_ids)

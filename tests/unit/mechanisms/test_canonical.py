"""The canonical input hash: sha256 of sorted-key, space-free, UTF-8 JSON with NumPy arrays as lists."""

import hashlib
import json

import numpy as np
import pytest

from auctions.mechanisms import MechanismError
from auctions.mechanisms.canonical import canonical_json, input_sha256

TINY = {"mechanism": "mcafee", "bids": [{"price": 1.5, "id": "é", "quantity": 2}], "asks": []}
# Written by hand: keys sorted at every level, no spaces, the é kept as UTF-8 (not \u00e9).
TINY_TEXT = '{"asks":[],"bids":[{"id":"é","price":1.5,"quantity":2}],"mechanism":"mcafee"}'
TINY_SHA256 = "afe8bd1388e6c4d05a3ef235efb7392f7ea6dc4fd7d3303e78496113649cded6"


class TestCanonicalJson:
    def test_sorts_keys_drops_spaces_and_keeps_non_ascii(self):
        assert canonical_json(TINY) == TINY_TEXT

    def test_writes_numpy_arrays_and_scalars_as_plain_json(self):
        doc = {"price": np.array([1.5, 0.1]), "id": np.array([3, 4]), "seed": np.int64(7)}

        assert canonical_json(doc) == '{"id":[3,4],"price":[1.5,0.1],"seed":7}'


class TestInputSha256:
    def test_hashes_a_tiny_book_to_its_known_value(self):
        assert input_sha256(TINY) == TINY_SHA256
        assert hashlib.sha256(TINY_TEXT.encode("utf-8")).hexdigest() == TINY_SHA256

    def test_hashes_numpy_columns_like_the_same_lists(self):
        listed = {"mechanism": "sbba", "bids": {"id": [1, 2], "price": [9.5, 0.1], "quantity": [1, 3]}}
        arrays = {
            "mechanism": "sbba",
            "bids": {"id": np.array([1, 2]), "price": np.array([9.5, 0.1]), "quantity": np.array([1, 3])},
        }

        assert input_sha256(arrays) == input_sha256(listed)

    def test_tells_an_integer_from_a_float_as_json_does(self):
        assert input_sha256({"price": [1]}) != input_sha256({"price": [1.0]})
        assert input_sha256({"price": np.array([1.0])}) == input_sha256({"price": [1.0]})

    def test_does_not_depend_on_key_order(self):
        reordered = {"asks": [], "bids": [{"quantity": 2, "id": "é", "price": 1.5}], "mechanism": "mcafee"}

        assert input_sha256(reordered) == TINY_SHA256

    def test_equals_the_spec_formula_on_a_plain_document(self):
        doc = {"mechanism": "vcg", "bids": [{"id": 1, "price": 2.25}], "asks": [{"id": "x", "price": 1e-7}]}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

        assert input_sha256(doc) == hashlib.sha256(text.encode("utf-8")).hexdigest()

    @pytest.mark.parametrize(
        "doc",
        [{"price": float("nan")}, {"price": np.array([np.inf])}, {"when": object()}],
        ids=["nan", "numpy inf", "not JSON"],
    )
    def test_refuses_a_document_that_is_not_canonical_json(self, doc):
        with pytest.raises(MechanismError) as caught:
            input_sha256(doc)

        assert caught.value.code == "bad_input"

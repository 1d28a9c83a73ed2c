"""The command `python -m auctions.mechanisms clear|price FILE|-`: one JSON document out, exit 0 or 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from auctions.mechanisms import clear
from tests.unit.mechanisms.test_heterogeneous_pruning import congested_book
from tests.unit.mechanisms.test_replay_under_load import fast_clock

ROOT = Path(__file__).resolve().parents[3]
PUBLIC = {
    "mechanism": "mcafee",
    "bids": [{"id": f"b{i}", "price": p} for i, p in enumerate([17, 14, 13, 9, 6])],
    "asks": [{"id": f"s{i}", "price": p} for i, p in enumerate([1, 4, 5, 8, 11])],
}


def run(*args: str, stdin: str | None = None) -> tuple[int, dict | list, str]:
    done = subprocess.run(
        [sys.executable, "-m", "auctions.mechanisms", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


class TestClearCommand:
    def test_clears_a_book_from_a_file(self, tmp_path):
        path = tmp_path / "book.json"
        path.write_text(json.dumps(PUBLIC))

        code, result, _ = run("clear", str(path))

        assert code == 0
        assert result["buyer_price"] == 8.5 and result["traded_quantity"] == 4

    def test_clears_a_book_from_standard_input(self):
        code, result, _ = run("clear", "-", stdin=json.dumps(PUBLIC))

        assert code == 0 and result["efficient_trades"] == 4

    def test_answers_a_list_with_a_list_in_order(self):
        books = [PUBLIC, dict(PUBLIC, mechanism="vcg"), dict(PUBLIC, mechanism="sbba", seed=4)]

        code, results, _ = run("clear", "-", stdin=json.dumps(books))

        assert code == 0
        assert [result["mechanism"] for result in results] == ["mcafee", "vcg", "sbba"]

    @pytest.mark.parametrize(
        "doc",
        [
            PUBLIC,
            dict(PUBLIC, mechanism="sbba_buyer_lottery", seed=11),
            {"mechanism": "huang", "bids": {"id": [1, 2], "price": [9, 8], "quantity": [1.5, 2]}, "asks": []},
            {
                "mechanism": "huang",
                "bids": [{"id": 1, "price": 9, "quantity": 2.5}],
                "asks": [{"id": 2, "price": 1}],
            },
            {"mechanism": "trade_reduction", "bids": [], "asks": []},
        ],
    )
    def test_prints_what_the_function_returns(self, doc):
        code, result, _ = run("clear", "-", stdin=json.dumps(doc))

        assert code == 0
        assert result == json.loads(json.dumps(clear(doc)))


def _with(**change):
    return json.dumps(dict(PUBLIC, **change))


MALFORMED = {
    "missing price": (json.dumps(dict(PUBLIC, bids=[{"id": 1}])), "bad_input"),
    "missing asks": (json.dumps({"mechanism": "mcafee", "bids": []}), "bad_input"),
    "string for a number": (_with(bids=[{"id": 1, "price": "12"}]), "bad_input"),
    "NaN literal": ('{"mechanism": "mcafee", "bids": [{"id": 1, "price": NaN}], "asks": []}', "bad_json"),
    "Infinity literal": (
        '{"mechanism": "vcg", "bids": [], "asks": [{"id": 1, "price": Infinity}]}',
        "bad_json",
    ),
    "negative quantity": (_with(asks=[{"id": 1, "price": 1, "quantity": -2}]), "bad_input"),
    "fractional unit quantity": (_with(asks=[{"id": 1, "price": 1, "quantity": 0.5}]), "bad_input"),
    "duplicate ids": (_with(asks=[{"id": "b0", "price": 1}]), "bad_input"),
    "unknown mechanism": (_with(mechanism="dutch"), "unknown_mechanism"),
    "no mechanism": (json.dumps({"bids": [], "asks": []}), "unknown_mechanism"),
    "not JSON": ("{bids: [", "bad_json"),
    "a number, not a book": ("42", "bad_input"),
    "a list with one bad book": (
        json.dumps([PUBLIC, {"mechanism": "mcafee", "bids": 3, "asks": []}]),
        "bad_input",
    ),
}


class TestErrors:
    @pytest.mark.parametrize("text, code", MALFORMED.values(), ids=MALFORMED.keys())
    def test_exits_2_with_an_error_document_and_no_traceback(self, text, code):
        status, document, stderr = run("clear", "-", stdin=text)

        assert status == 2
        assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}
        assert document["error"]["code"] == code
        assert "Traceback" not in stderr

    @pytest.mark.parametrize(
        "args",
        [
            (),
            ("clear",),
            ("bid", "-"),
            ("clear", "a", "b"),
            ("price", "-", "--replay", "-"),
            ("clear", "-", "--x", "-"),
        ],
        ids=["none", "no file", "bad verb", "extra", "price replay", "bad option"],
    )
    def test_answers_wrong_usage_with_the_usage_code(self, args):
        status, document, stderr = run(*args, stdin="")

        assert status == 2 and document["error"]["code"] == "usage"
        assert "Traceback" not in stderr

    def test_replays_a_book_with_its_recorded_result(self, tmp_path, monkeypatch):
        book = dict(congested_book(16, 3), payment_rule="vcg", time_limit_s=45)
        with monkeypatch.context() as patch:
            fast_clock(patch)  # the original run's guard cuts solves (see test_replay_under_load)
            recorded = clear(book)
        (tmp_path / "book.json").write_text(json.dumps(book))
        (tmp_path / "result.json").write_text(json.dumps(recorded))

        status, document, _ = run(
            "clear", str(tmp_path / "book.json"), "--replay", str(tmp_path / "result.json")
        )
        live_status, live, _ = run("clear", str(tmp_path / "book.json"))

        assert (status, live_status) == (0, 0)
        assert recorded["time_cuts"] and document == recorded
        assert "time_cuts" not in live and live["welfare"] > recorded["welfare"]

    def test_answers_a_missing_file_with_the_usage_code(self, tmp_path):
        status, document, _ = run("clear", str(tmp_path / "absent.json"))

        assert status == 2 and document["error"]["code"] == "usage"

"""The match on chain (issue 12, Du et al.): cleared rounds' hashes committed to SettlementV2, the
reconciler, and `cpx_round replay` checking the chain. In-process EVM, and anvil when CPX_ANVIL_URL is
set (the services tier)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from auctions.mechanisms import clear
from auctions.mechanisms.canonical import canonical_json
from auctions.mechanisms.canonical import input_sha256 as canonical_sha256
from auctions.models import Round
from contracts.client import (
    ChainRejected,
    ChainUnavailable,
    SettlementClient,
    SettlementV2Client,
    round_commitment_of,
)
from contracts.models import RoundCommitment
from contracts.services.round_commitments import (
    ZERO32,
    round_commitments_reconcile,
    round_commitments_submit,
    round_replay_on_chain,
)
from tests.conftest import NOW, service_unavailable
from tests.integration.test_rounds import bid, cleared_round, funded_consumer, online_resource
from workers import tasks

pytestmark = pytest.mark.django_db
Status = RoundCommitment.Status


@pytest.fixture(params=["evm", pytest.param("anvil", marks=pytest.mark.services)])
def operator(request, settings) -> SettlementV2Client:
    """The operator's client on a fresh SettlementV2 (admin: another dev account), which the app's own
    client (settings) points at too: the tasks and `cpx_round replay` talk to the same contract."""
    if request.param == "evm":
        base = SettlementClient.connect(shared=True)  # the app's in-process chain
    else:
        url = os.environ.get("CPX_ANVIL_URL", "").strip()
        if not url:
            service_unavailable("CPX_ANVIL_URL is not set: no anvil node for the real-node tier")
        base = SettlementClient.connect(url, timeout_s=20)
        settings.CHAIN_RPC_URL = url
    keys = base.dev_keys()
    client = SettlementV2Client(base._conn, keys[0])  # noqa: SLF001
    client.deploy(admin=client.with_signer(keys[9]).address, reclaim_window_s=86_400)
    settings.CPX_SETTLEMENT_ON_CHAIN = True
    settings.CHAIN_CONTRACT_VERSION = "v2"
    settings.CHAIN_CONTRACT_ADDRESS = client.contract_address
    settings.CHAIN_SIGNER_KEY = keys[0] if request.param == "anvil" else ""
    return client


def a_cleared_round(price: str = "1.00") -> Round:
    online_resource(ask_per_device_hour=Decimal("0.10"))
    bid(funded_consumer(), price)
    round_obj = cleared_round()
    assert round_obj.status == Round.Status.CLEARED and round_obj.jobs_matched == 1
    return round_obj


class LostReceipt:
    """Test double for the node: the commit reaches the chain, its answer is lost on the way back."""

    def __init__(self, inner: SettlementV2Client):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def commit_rounds(self, rounds):
        self._inner.commit_rounds(rounds)
        raise ChainUnavailable("connection reset after sending")


class NodeDown(LostReceipt):
    """Test double for the node: every send fails before reaching it."""

    def commit_rounds(self, rounds):
        raise ChainUnavailable("connection refused")


def committed_events(client: SettlementV2Client, round_id: int) -> list[dict]:
    return [e for e in client.events(names=["RoundCommitted"]) if e["args"]["roundId"] == round_id]


class TestRoundCommitmentsSubmit:
    def test_a_cleared_round_is_committed_once_and_replay_matches_the_chain(self, operator, capsys):
        round_obj = a_cleared_round()

        run = round_commitments_submit(now=NOW, client=operator)
        again = round_commitments_submit(now=NOW, client=operator)

        row = RoundCommitment.objects.get(round=round_obj)
        assert (run.created, run.sent, again.created, again.sent) == (1, 1, 0, 0)
        assert row.status == Status.CONFIRMED and row.confirmed_via == "RECEIPT"
        assert (row.snapshot_sha256, row.result_sha256) == (
            round_obj.snapshot_sha256,
            round_obj.result_sha256,
        )
        assert operator.round_commitment(round_obj.pk) == round_commitment_of(
            round_obj.snapshot_sha256, round_obj.result_sha256
        )
        event = operator.round_committed(round_obj.pk)
        assert (event["tx_hash"], event["block_number"]) == (row.tx_hash, row.block_number)
        assert len(committed_events(operator, round_obj.pk)) == 1
        with pytest.raises(SystemExit) as done:
            call_command("cpx_round", "replay", str(round_obj.pk), "--require-chain")
        report = json.loads(capsys.readouterr().out)
        assert done.value.code == 0
        assert report["match"] is True
        assert report["chain"]["status"] == "match"
        assert report["chain"]["result_sha256"] == round_obj.result_sha256
        assert report["chain"]["tx_hash"] == row.tx_hash

    def test_several_rounds_go_in_one_transaction_oldest_first(self, operator):
        rounds = [a_cleared_round(price) for price in ("1.00", "0.90", "0.80")]

        run = round_commitments_submit(now=NOW, client=operator, max_rounds=2)
        rest = round_commitments_submit(now=NOW, client=operator, max_rounds=2)

        rows = {row.round_id: row for row in RoundCommitment.objects.all()}
        assert (run.sent, rest.sent) == (2, 1)
        assert rows[rounds[0].pk].tx_hash == rows[rounds[1].pk].tx_hash != rows[rounds[2].pk].tx_hash
        assert rows[rounds[0].pk].rounds_in_tx == 2
        assert all(row.status == Status.CONFIRMED for row in rows.values())

    def test_a_lost_receipt_is_recovered_from_the_chain_without_a_second_send(self, operator):
        round_obj = a_cleared_round()

        with pytest.raises(ChainUnavailable):
            round_commitments_submit(now=NOW, client=LostReceipt(operator))
        row = RoundCommitment.objects.get(round=round_obj)
        assert row.status == Status.PENDING and row.next_attempt_at > NOW
        early = round_commitments_submit(now=NOW, client=operator)
        later = round_commitments_submit(now=NOW + timedelta(minutes=5), client=operator)

        row.refresh_from_db()
        assert (early.sent, early.recovered, later.sent, later.recovered) == (0, 0, 0, 1)
        assert row.status == Status.CONFIRMED and row.confirmed_via == "CHAIN_LOOKUP"
        assert row.tx_hash == operator.round_committed(round_obj.pk)["tx_hash"]
        assert len(committed_events(operator, round_obj.pk)) == 1

    def test_a_worker_that_died_holding_rows_is_taken_over_after_the_stale_time(self, operator, settings):
        round_obj = a_cleared_round()
        with pytest.raises(ChainUnavailable):
            round_commitments_submit(now=NOW, client=NodeDown(operator))
        RoundCommitment.objects.filter(round=round_obj).update(
            status=Status.SUBMITTED, submitted_at=NOW, next_attempt_at=None
        )  # a worker claimed it, then died before sending

        live = round_commitments_submit(now=NOW + timedelta(seconds=10), client=operator)
        stale = NOW + timedelta(seconds=settings.CPX_SETTLEMENT_SUBMIT_STALE_S + 1)
        taken_over = round_commitments_submit(now=stale, client=operator)

        row = RoundCommitment.objects.get(round=round_obj)
        assert (live.sent, taken_over.sent) == (0, 1)
        assert row.status == Status.CONFIRMED and row.attempts == 2
        assert len(committed_events(operator, round_obj.pk)) == 1

    def test_the_node_down_leaves_rows_pending_and_the_task_raises_for_a_retry(self, operator):
        round_obj = a_cleared_round()

        with pytest.raises(ChainUnavailable):
            round_commitments_submit(now=NOW, client=NodeDown(operator))

        row = RoundCommitment.objects.get(round=round_obj)
        assert row.status == Status.PENDING and row.error_code == "chain_unavailable"
        assert operator.round_commitment(round_obj.pk) == ZERO32

    def test_a_round_id_committed_with_other_hashes_is_a_mismatch_never_overwritten(self, operator):
        round_obj = a_cleared_round()
        operator.commit_rounds([(round_obj.pk, "11" * 32, "22" * 32)])  # the key used elsewhere first

        run = round_commitments_submit(now=NOW, client=operator)

        row = RoundCommitment.objects.get(round=round_obj)
        assert run.recovered == 1 and run.sent == 0
        assert row.status == Status.FAILED and row.error_code == "RoundMismatch"
        assert row.chain_status == RoundCommitment.ChainStatus.MISMATCH
        assert operator.round_commitment(round_obj.pk) == round_commitment_of("11" * 32, "22" * 32)

    def test_a_round_that_no_longer_hashes_to_its_own_hashes_is_never_committed(self, operator):
        round_obj = a_cleared_round()
        result = round_obj.result
        result[0]["welfare"] = 10**6
        Round.objects.filter(pk=round_obj.pk).update(result=result)

        run = round_commitments_submit(now=NOW, client=operator)

        row = RoundCommitment.objects.get(round=round_obj)
        assert (run.inconsistent, run.sent) == (1, 0)
        assert row.status == Status.FAILED and row.error_code == "inconsistent_round"
        assert operator.round_commitment(round_obj.pk) == ZERO32
        assert round_replay_on_chain(round_id=round_obj.pk)["chain"]["status"] == "not_committed"

    def test_a_paused_contract_fails_the_rows_with_its_reason(self, operator):
        round_obj = a_cleared_round()
        operator.with_signer(operator.dev_keys()[9]).admin_call("setPaused", True)

        run = round_commitments_submit(now=NOW, client=operator)

        row = RoundCommitment.objects.get(round=round_obj)
        assert run.failed == 1 and row.status == Status.FAILED and row.error_code == "IsPaused"

    def test_rows_refused_by_a_pause_go_again_once_it_is_lifted(self, operator):
        round_obj = a_cleared_round()
        admin = operator.with_signer(operator.dev_keys()[9])
        admin.admin_call("setPaused", True)
        round_commitments_submit(now=NOW, client=operator)
        still_paused = round_commitments_reconcile(now=NOW, client=operator)
        admin.admin_call("setPaused", False)

        lifted = round_commitments_reconcile(now=NOW, client=operator)
        run = round_commitments_submit(now=NOW, client=operator)

        assert (still_paused.retried, lifted.retried, run.sent) == (0, 1, 1)
        assert RoundCommitment.objects.get(round=round_obj).status == Status.CONFIRMED


class TestTamper:
    def test_a_stored_result_altered_after_the_commit_is_a_mismatch_against_the_chain(self, operator, capsys):
        round_obj = a_cleared_round()
        round_commitments_submit(now=NOW, client=operator)
        result = round_obj.result
        result[0]["welfare"] = 10**6  # the database's record of what the round paid out, altered
        Round.objects.filter(pk=round_obj.pk).update(result=result)

        with pytest.raises(SystemExit) as done:
            call_command("cpx_round", "replay", str(round_obj.pk))

        report = json.loads(capsys.readouterr().out)
        assert done.value.code == 1
        assert report["chain"]["status"] == "mismatch"
        assert (
            "result: the database's stored result does not hash to the committed one"
            in (report["chain"]["differences"])
        )

    def test_a_consistent_rewrite_of_the_round_passes_the_local_replay_but_not_the_chain(
        self, operator, capsys
    ):
        round_obj = a_cleared_round("1.00")
        round_commitments_submit(now=NOW, client=operator)
        # Someone with the database rewrites history consistently: the job's bid below any ask (it was
        # never matched), the result the engine gives for that, both hashes recomputed. The local replay
        # cannot tell.
        books = json.loads(round_obj.snapshot)
        books[0]["jobs"][0]["bid"] = 0.001
        snapshot = canonical_json(books)
        result = clear(books)
        Round.objects.filter(pk=round_obj.pk).update(
            snapshot=snapshot,
            snapshot_sha256=canonical_sha256(books),
            result=json.loads(canonical_json(result)),
            result_sha256=canonical_sha256(result),
        )

        with pytest.raises(SystemExit) as done:
            call_command("cpx_round", "replay", str(round_obj.pk))
        reconciliation = round_commitments_reconcile(now=NOW, client=operator)

        report = json.loads(capsys.readouterr().out)
        assert report["match"] is True  # the database agrees with itself
        assert report["chain"]["status"] == "mismatch"
        assert done.value.code == 1
        assert reconciliation.mismatched == 1
        row = RoundCommitment.objects.get(round=round_obj)
        assert row.chain_status == RoundCommitment.ChainStatus.MISMATCH
        assert "changed since it was committed" in row.chain_detail


class TestReconcile:
    def test_committed_rounds_match_and_uncommitted_ones_are_counted(self, operator):
        first = a_cleared_round()
        round_commitments_submit(now=NOW, client=operator)
        a_cleared_round("0.90")

        out = round_commitments_reconcile(now=NOW, client=operator)

        assert (out.checked, out.matched, out.mismatched, out.uncommitted) == (1, 1, 0, 1)
        assert RoundCommitment.objects.get(round=first).chain_status == RoundCommitment.ChainStatus.MATCHED

    def test_a_confirmed_commitment_the_chain_does_not_hold_is_sent_again(self, operator):
        round_obj = a_cleared_round()
        with pytest.raises(ChainUnavailable):
            round_commitments_submit(now=NOW, client=NodeDown(operator))
        RoundCommitment.objects.filter(round=round_obj).update(
            status=Status.CONFIRMED, tx_hash="0x" + "ab" * 32, block_number=1
        )  # the database says confirmed; the chain never got it (a reorg dropped the transaction)

        out = round_commitments_reconcile(now=NOW, client=operator)
        row = RoundCommitment.objects.get(round=round_obj)
        assert (out.missing, out.resent) == (1, 1)
        assert row.status == Status.PENDING and row.chain_status == RoundCommitment.ChainStatus.MISSING
        run = round_commitments_submit(now=NOW, client=operator)

        row.refresh_from_db()
        assert run.sent == 1 and row.status == Status.CONFIRMED
        assert round_commitments_reconcile(now=NOW, client=operator).matched == 1

    def test_a_commitment_cpx_did_not_make_is_reported_once(self, operator):
        a_cleared_round()
        round_commitments_submit(now=NOW, client=operator)
        operator.commit_rounds([(4242, "11" * 32, "22" * 32)])  # a round id squatted by the operator key

        first = round_commitments_reconcile(now=NOW, client=operator)
        second = round_commitments_reconcile(now=NOW, client=operator)

        assert first.unknown_on_chain == [4242]
        assert second.unknown_on_chain == []


class TestContractRules:
    def test_the_contract_takes_a_round_id_once_and_from_the_operator_only(self, operator):
        operator.commit_rounds([(7, "aa" * 32, "bb" * 32)])

        with pytest.raises(ChainRejected) as again:
            operator.commit_rounds([(7, "aa" * 32, "cc" * 32)])
        with pytest.raises(ChainRejected) as stranger:
            operator.with_signer(operator.dev_keys()[5]).commit_rounds([(8, "aa" * 32, "bb" * 32)])
        with pytest.raises(ChainRejected) as admin:
            operator.with_signer(operator.dev_keys()[9]).commit_rounds([(8, "aa" * 32, "bb" * 32)])

        assert again.value.error_name == "RoundAlreadyCommitted"
        assert stranger.value.error_name == admin.value.error_name == "NotOperator"
        assert operator.round_commitment(7) == round_commitment_of("aa" * 32, "bb" * 32)
        assert operator.round_commitment(8) == ZERO32


class TestInterfaces:
    def test_the_round_api_shows_the_commitment(self, operator, client):
        from tests.factories import ConsumerFactory

        round_obj = a_cleared_round()
        url = reverse("round-detail", args=[round_obj.pk])
        client.force_login(ConsumerFactory())
        before = client.get(url).json()["chain_commitment"]
        round_commitments_submit(now=NOW, client=operator)

        shown = client.get(url).json()["chain_commitment"]

        row = RoundCommitment.objects.get(round=round_obj)
        assert before is None
        assert shown["status"] == "CONFIRMED"
        assert (shown["tx_hash"], shown["block_number"]) == (row.tx_hash, row.block_number)
        assert shown["result_sha256"] == round_obj.result_sha256

    def test_the_round_page_shows_the_commitment(self, operator, client):
        from tests.factories import ConsumerFactory

        round_obj = a_cleared_round()
        url = reverse("public:round", args=[round_obj.pk])
        client.force_login(ConsumerFactory())
        before = client.get(url).content.decode()
        round_commitments_submit(now=NOW, client=operator)

        after = client.get(url).content.decode()

        row = RoundCommitment.objects.get(round=round_obj)
        assert "not committed" in before
        assert row.tx_hash in after and f"block {row.block_number}" in after

    def test_the_tasks_commit_and_reconcile_through_the_apps_client(self, operator):
        round_obj = a_cleared_round()

        committed = tasks.commit_rounds()
        reconciled = tasks.reconcile_rounds()

        assert committed["sent"] == 1
        assert reconciled["matched"] == 1
        assert operator.round_commitment(round_obj.pk) != ZERO32

    def test_cpx_chain_commits_and_reconciles_rounds_by_hand(self, operator, capsys):
        round_obj = a_cleared_round()

        call_command("cpx_chain", "commit-rounds")
        call_command("cpx_chain", "reconcile-rounds")

        committed, reconciled = (json.loads(line) for line in capsys.readouterr().out.splitlines())
        assert committed["sent"] == 1 and reconciled["matched"] == 1
        assert RoundCommitment.objects.get(round=round_obj).status == Status.CONFIRMED

    def test_the_tasks_are_named_late_acked_time_limited_and_retry_only_transient_errors(self, settings):
        from django.db import InterfaceError, OperationalError

        from config.celery import app

        scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
        for name in ("contracts.commit_rounds", "contracts.reconcile_rounds"):
            task = app.tasks[name]
            assert task.acks_late is True, name
            assert set(task.autoretry_for) == {OperationalError, InterfaceError, ChainUnavailable}, name
            assert 0 < task.soft_time_limit < task.time_limit, name
            assert name in scheduled, name

    @pytest.mark.parametrize(
        ("name", "value", "error"),
        [
            ("CPX_ROUND_COMMIT_BATCH", 0, "auctions.E070"),
            ("CPX_ROUND_COMMIT_BATCH", 501, "auctions.E070"),
            ("CPX_ROUND_COMMIT_INTERVAL_S", 0, "auctions.E071"),
        ],
    )
    def test_start_up_refuses_a_commit_setting_that_cannot_work(self, settings, name, value, error):
        from auctions.checks import check_clearing_settings

        setattr(settings, name, value)

        assert [message.id for message in check_clearing_settings()] == [error]

    def test_switched_off_the_tasks_and_the_replay_leave_the_chain_alone(self, settings):
        settings.CPX_SETTLEMENT_ON_CHAIN = False
        round_obj = a_cleared_round()

        assert "skipped" in tasks.commit_rounds()
        assert "skipped" in tasks.reconcile_rounds()
        assert round_replay_on_chain(round_id=round_obj.pk)["chain"] == {"status": "off"}

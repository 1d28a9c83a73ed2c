"""The public market (no login), published rounds (snapshot and result for any signed-in role) and
their replay: through the API, and offline with `cpx_round replay --file`."""

import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from auctions.models import Round
from auctions.services.rounds import round_clear, round_open
from market.models import Provider
from tests.conftest import NOW, assert_error, bearer_client
from tests.factories import ConsumerFactory, OperatorFactory, ProviderFactory, ResourceFactory, job_submit

pytestmark = pytest.mark.django_db


def online_listing(**fields):
    provider = ProviderFactory(region=fields.pop("region", "eu-west"), display_name="Secret Garage Rig")
    Provider.objects.filter(pk=provider.pk).update(last_heartbeat_at=NOW)
    fields.setdefault("price_floor", Decimal(0))
    return ResourceFactory(provider=provider, **fields)


def a_cleared_round() -> Round:
    online_listing(ask_per_device_hour=Decimal("0.80"), speed_factor=Decimal("2"))
    job_submit(consumer=ConsumerFactory(balance=Decimal("100")), max_price_per_device_hour=Decimal("2.00"))
    return round_clear(round_id=round_open(now=NOW).pk, now=NOW)


@pytest.fixture(autouse=True)
def _clock(monkeypatch):
    """The market view reads the real clock; the listings heartbeat at NOW."""
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)


class TestPublicMarket:
    def test_shows_offers_per_class_without_login_and_no_provider_identity(self):
        online_listing(ask_per_device_hour=Decimal("0.80"), speed_factor=Decimal("2"), device_count=2)
        online_listing(ask_per_device_hour=Decimal("0.30"), region="ap-south")

        response = APIClient().get("/api/v1/market")

        assert response.status_code == 200
        body = response.json()
        assert body["currency"] == "USDC"
        assert body["price_unit"] == "USDC per reference device-hour"
        by_class = {row["resource_class"]: row for row in body["classes"]}
        eu = by_class["GPU/24G/eu-west"]
        assert (eu["device_class"], eu["memory_tier_gib"], eu["region"], eu["devices"]) == (
            "GPU",
            24,
            "eu-west",
            2,
        )
        assert eu["offers"][0]["ask_per_device_hour"] == "0.800000"
        assert eu["offers"][0]["ask_per_reference_device_hour"] == "0.400000"
        assert "GPU/24G/ap-south" in by_class
        assert "Secret Garage Rig" not in response.content.decode()

    def test_shows_recent_clearing_prices_per_reference_device_hour(self):
        cleared = a_cleared_round()

        body = APIClient().get("/api/v1/market").json()

        prices = {row["resource_class"]: row for row in body["recent_prices"]["classes"]}
        row = prices["GPU/24G/eu-west"]
        assert body["recent_prices"]["rounds"][0] == cleared.pk
        paid = Decimal(row["recent"][0]["price_per_device_hour"])
        assert Decimal(row["last_price_per_reference_device_hour"]) == paid / 2


class TestPublishedRounds:
    @pytest.mark.parametrize("role", ["consumer", "provider", "operator"])
    def test_any_signed_in_role_downloads_the_snapshot_and_result(self, role):
        round_obj = a_cleared_round()
        user = {"consumer": ConsumerFactory, "operator": OperatorFactory}.get(
            role, lambda: ProviderFactory().user
        )()
        client = bearer_client(user)

        snapshot = client.get(f"/api/v1/rounds/{round_obj.pk}/snapshot")
        result = client.get(f"/api/v1/rounds/{round_obj.pk}/result")

        assert snapshot.status_code == result.status_code == 200
        assert "attachment" in snapshot["Content-Disposition"]
        assert snapshot.json()["snapshot_sha256"] == round_obj.snapshot_sha256
        assert result.json()["result_sha256"] == round_obj.result_sha256
        assert "Secret Garage Rig" not in snapshot.content.decode()
        assert user.username not in snapshot.content.decode()

    def test_refuses_an_anonymous_download(self):
        round_obj = a_cleared_round()

        assert_error(APIClient().get(f"/api/v1/rounds/{round_obj.pk}/snapshot"), 401, "not_authenticated")

    def test_a_round_not_cleared_yet_has_no_snapshot(self):
        open_round = round_open(now=NOW)

        response = bearer_client(ConsumerFactory()).get(f"/api/v1/rounds/{open_round.pk}/snapshot")

        assert_error(response, 409, "round_not_published")

    def test_an_unknown_round_is_404(self):
        assert_error(
            bearer_client(ConsumerFactory()).get("/api/v1/rounds/98765/result"), 404, "round_not_found"
        )


class TestOfflineReplay:
    def download(self, round_obj, tmp_path):
        client = bearer_client(ConsumerFactory())
        snapshot = tmp_path / "snapshot.json"
        result = tmp_path / "result.json"
        snapshot.write_bytes(client.get(f"/api/v1/rounds/{round_obj.pk}/snapshot").content)
        result.write_bytes(client.get(f"/api/v1/rounds/{round_obj.pk}/result").content)
        return snapshot, result

    def test_a_downloaded_snapshot_replays_to_the_published_hashes(self, tmp_path, capsys):
        snapshot, result = self.download(a_cleared_round(), tmp_path)

        with pytest.raises(SystemExit) as exit_code:
            call_command("cpx_round", "replay", "--file", str(snapshot), "--result", str(result))

        out, err = capsys.readouterr()
        report = json.loads(out)
        assert exit_code.value.code == 0
        assert report["match"] is True
        assert report["recomputed_result_sha256"] == report["result_sha256"]
        assert "hashes match" in err

    def test_a_tampered_snapshot_does_not_match(self, tmp_path, capsys):
        snapshot, _ = self.download(a_cleared_round(), tmp_path)
        document = json.loads(snapshot.read_text())
        text = json.dumps(document["books"])
        document["books"] = json.loads(text.replace("2.0", "2.5", 1))
        snapshot.write_text(json.dumps(document))

        with pytest.raises(SystemExit) as exit_code:
            call_command("cpx_round", "replay", "--file", str(snapshot))

        report = json.loads(capsys.readouterr().out)
        assert exit_code.value.code == 1
        assert report["match"] is False
        assert report["recomputed_snapshot_sha256"] != report["snapshot_sha256"]

    def test_a_file_that_is_not_a_snapshot_exits_2(self, tmp_path, capsys):
        bad = tmp_path / "bad.json"
        bad.write_text('{"hello": 1}')

        with pytest.raises(SystemExit) as exit_code:
            call_command("cpx_round", "replay", "--file", str(bad))

        assert exit_code.value.code == 2
        assert "snapshot" in capsys.readouterr().err

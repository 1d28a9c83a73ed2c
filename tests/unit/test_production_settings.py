"""config.settings.production refuses to start without its secrets and money-moving configuration."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPLETE = {
    "DJANGO_SECRET_KEY": "s" * 50,
    "DJANGO_ALLOWED_HOSTS": "cpx.example.org",
    "DATABASE_URL": "postgres://cpx@db:5432/cpx",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    "CPX_SETTLEMENT_ON_CHAIN": "true",
    "CHAIN_RPC_URL": "http://node:8545",
    "CHAIN_SIGNER_KEY": "0x" + "1" * 64,
    "CHAIN_CONTRACT_ADDRESS": "0x" + "2" * 40,
}


def load(environment: dict) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in COMPLETE}
    env.update(environment, DJANGO_SETTINGS_MODULE="config.settings.production")
    code = "from django.conf import settings; print(settings.CHAIN_RPC_URL or 'off')"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


class TestProductionSettings:
    def test_load_with_every_required_variable(self):
        result = load(COMPLETE)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "http://node:8545"

    @pytest.mark.parametrize(
        "missing",
        [
            "DJANGO_SECRET_KEY",
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "CPX_SETTLEMENT_ON_CHAIN",
            "CHAIN_SIGNER_KEY",
        ],
    )
    def test_refuse_to_start_without(self, missing):
        environment = {key: value for key, value in COMPLETE.items() if key != missing}

        result = load(environment)

        assert result.returncode != 0
        assert missing in result.stderr

    def test_need_no_chain_when_settlement_stays_in_the_ledger(self):
        environment = {key: value for key, value in COMPLETE.items() if not key.startswith("CHAIN_")}

        result = load({**environment, "CPX_SETTLEMENT_ON_CHAIN": "false"})

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "off"

    def test_operate_with_json_logs_stored_results_hashed_static_files_and_a_pool(self):
        env = {key: value for key, value in os.environ.items() if key not in COMPLETE}
        env.update(COMPLETE, DJANGO_SETTINGS_MODULE="config.settings.production")
        code = (
            "import json; from django.conf import settings as s; print(json.dumps({"
            "'results': s.CELERY_RESULT_BACKEND, 'log': s.LOGGING['handlers']['console']['formatter'],"
            "'access': s.CPX_ACCESS_LOG, 'static': s.STORAGES['staticfiles']['BACKEND'],"
            "'pool': s.DATABASES['default']['OPTIONS'].get('pool'),"
            "'age': s.DATABASES['default']['CONN_MAX_AGE'],"
            "'redirect': s.SECURE_SSL_REDIRECT, 'exempt': s.SECURE_REDIRECT_EXEMPT}))"
        )

        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

        assert result.returncode == 0, result.stderr
        loaded = json.loads(result.stdout)
        assert loaded["results"] == "django-db"
        assert loaded["log"] == "json" and loaded["access"] is True
        assert loaded["static"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
        assert loaded["pool"]["max_size"] >= 1 and loaded["age"] == 0
        assert loaded["redirect"] is True and r"^readyz$" in loaded["exempt"]

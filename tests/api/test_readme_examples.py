"""The README's first steps work as written: its example POST /jobs body is accepted, and it says
how to serve on another port."""

import json
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from tests.conftest import bearer_client
from tests.factories import ConsumerFactory

pytestmark = pytest.mark.django_db

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


class TestReadme:
    def test_the_example_job_body_is_accepted(self):
        text = re.search(r"-d '(\{.*?\})'$", README, re.DOTALL | re.MULTILINE).group(1)
        tomorrow = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.loads(text.replace("'\"$DEADLINE\"'", tomorrow))
        client = bearer_client(ConsumerFactory(balance=Decimal("100")))

        response = client.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="readme")
        quote = client.post("/api/v1/quote", body, format="json")

        assert response.status_code == 201, response.json()
        assert quote.status_code == 200, quote.json()

    def test_says_how_to_serve_on_another_port(self):
        assert "make demo PORT=" in README

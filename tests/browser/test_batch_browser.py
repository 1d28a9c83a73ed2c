"""A batch job in a real browser (issue 10): the consumer attaches an OpenAI Batch file on the submit
page, watches the requests being answered on the job's page without reloading, and downloads the
results. The provider's agent runs them on a real llama.cpp server (requirements-llm.txt)."""

import json
import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from market.models import JobRequest
from tests.batches import batch_jsonl
from tests.browser.conftest import TIMEOUT_S, log_in, user_with_password
from tests.factories import ConsumerFactory, ResourceFactory
from tests.llm import MODEL
from workers.agent.backends import OpenAIBackend

pytestmark = [pytest.mark.browser, pytest.mark.llm, pytest.mark.services]

TIMEOUT_MS = TIMEOUT_S * 1000
REQUESTS = 40


def test_uploads_watches_progress_and_downloads_the_results(
    page, live_market, llm_url, file_storage, tmp_path
):
    with live_market.db.turn():
        resource = ResourceFactory(price_floor=Decimal("0"), ask_per_device_hour=Decimal("0.20"))
        consumer = user_with_password(ConsumerFactory, balance=Decimal("100"))
    live_market.start_agent(resource.provider, backend=OpenAIBackend(llm_url, concurrency=1))
    requests_file = tmp_path / "requests.jsonl"
    requests_file.write_bytes(batch_jsonl(REQUESTS, max_tokens=12))
    log_in(page, live_market, consumer)

    page.goto(f"{live_market.url}/jobs/new/")
    page.locator("#id_model_name").fill(MODEL)
    page.locator("#id_params_billion").fill("0.1")
    page.locator("#id_region").fill("eu-west")
    page.locator("#id_max_price_per_device_hour").fill("1.5")
    page.locator("#id_budget").fill("10")
    page.locator("#id_input_file").set_input_files(str(requests_file))
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("heading", name=re.compile(rf"Job #\d+: {MODEL}"))).to_be_visible()
    page.evaluate("window.__sameDocument = true")  # a reload would lose it

    answered = page.locator("#batch-done")
    expect(answered).to_contain_text(f"of {REQUESTS}")
    expect(page.locator("#job-status")).to_have_text("Completed", timeout=TIMEOUT_MS)
    expect(answered).to_contain_text(f"{REQUESTS} of {REQUESTS}")
    with page.expect_download() as download:
        page.locator("#download-output").click()

    assert page.evaluate("window.__sameDocument === true")
    lines = [json.loads(line) for line in download.value.path().read_bytes().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"request-{i}" for i in range(1, REQUESTS + 1)]
    assert all(line["response"]["status_code"] == 200 for line in lines)
    job = live_market.db.read(lambda: JobRequest.objects.get(consumer=consumer))
    assert job.status == "COMPLETED" and job.batch_totals["requests"] == REQUESTS
    assert page.problems == []

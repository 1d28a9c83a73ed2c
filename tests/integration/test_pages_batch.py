"""The pages of a batch job (issue 10): attach the batch file on the submit page (checked like the
API's upload), and on the job's page the requests answered, metered tokens, sha256s and the
download buttons."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from auctions.services.leases import lease_accept, lease_complete
from market.models import DataFile, JobRequest
from market.services.files import file_expire
from tests.batches import MODEL, answer, batch_job, batch_jsonl
from tests.conftest import NOW, bearer_client
from tests.factories import ConsumerFactory
from tests.integration.pages import signed_in
from tests.integration.test_leases import make_lease
from tests.integration.test_pages_consumer import job_form
from workers.tasks import expire_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def far_deadlines(settings):
    """These jobs run through views that read the real clock, so their deadlines lie far ahead
    (2099) of the fixed test time, past the 30-day bound a submission has."""
    settings.CPX_MAX_JOB_DEADLINE_DAYS = 36500


class TestSubmitPageWithAFile:
    def test_a_job_is_submitted_with_its_batch_file_once(self, file_storage):
        consumer = ConsumerFactory(balance=Decimal("100"))
        client = signed_in(consumer)
        data = batch_jsonl(5, max_tokens=10)

        def post():
            form = job_form(model_name=MODEL, workload_tokens=None)
            return client.post(
                reverse("pages:job-new"), {**form, "input_file": SimpleUploadedFile("b.jsonl", data)}
            )

        first, again = post(), post()

        assert first.status_code == again.status_code == 302
        job = JobRequest.objects.get(consumer=consumer)
        assert job.input_file.lines == 5 and job.workload_tokens == job.input_file.prompt_tokens_estimate + 50
        assert DataFile.objects.filter(owner=consumer).count() == 1

    def test_a_bad_line_is_shown_on_the_page_and_nothing_is_kept(self, file_storage):
        consumer = ConsumerFactory(balance=Decimal("100"))
        client = signed_in(consumer)
        data = batch_jsonl(3) + b"not json\n"

        response = client.post(
            reverse("pages:job-new"),
            {**job_form(model_name=MODEL), "input_file": SimpleUploadedFile("b.jsonl", data)},
        )

        assert response.status_code == 400
        assert "Line 4:" in response.content.decode()
        assert not DataFile.objects.filter(owner=consumer).exists()
        assert not JobRequest.objects.filter(consumer=consumer).exists()


class TestBatchJobPage:
    def test_shows_the_totals_hashes_and_download_buttons(self, file_storage):
        consumer = ConsumerFactory(balance=Decimal("100"))
        client = signed_in(consumer)
        job = batch_job(consumer=consumer, data=batch_jsonl(2), now=NOW, deadline=NOW.replace(year=2099))
        lease = make_lease(job=job, now=NOW, expected_hours=Decimal("0.5"))
        lease_accept(provider=lease.provider, lease_id=lease.pk, now=NOW)
        agent = bearer_client(lease.provider.user, "provider")
        agent.post(
            f"/api/v1/agent/leases/{lease.pk}/results",
            {"results": [answer("request-1"), answer("request-2", status_code=500)]},
            format="json",
        )
        lease_complete(
            provider=lease.provider, lease_id=lease.pk, tokens_in=0, tokens_out=0, device_seconds=0, now=NOW
        )
        job.refresh_from_db()

        page = client.get(reverse("pages:job-detail", args=[job.pk])).content.decode()
        output = client.get(reverse("job-output", args=[job.pk]))

        assert 'id="download-output"' in page and 'id="download-errors"' in page
        assert job.output_file.sha256 in page and job.error_file.sha256 in page
        assert "2 of 2" in page and "1 with errors" in page
        assert output.status_code == 200 and b"request-1" in b"".join(output.streaming_content)


class TestFileExpiry:
    def test_deletes_the_bytes_of_expired_files_but_keeps_a_live_jobs_input(self, file_storage):
        consumer = ConsumerFactory(balance=Decimal("100"))
        job = batch_job(consumer=consumer, data=batch_jsonl(2), now=NOW, deadline=NOW.replace(year=2099))
        idle = batch_job(consumer=consumer, data=batch_jsonl(3), now=NOW, deadline=NOW.replace(year=2099))
        JobRequest.objects.filter(pk=idle.pk).update(status="CANCELLED")
        later = NOW + timedelta(days=31)

        assert file_expire(now=later) == 1

        idle.input_file.refresh_from_db()
        job.input_file.refresh_from_db()
        assert idle.input_file.deleted_at == later and job.input_file.deleted_at is None
        assert [p.name for p in file_storage.rglob("*.jsonl")] == [
            job.input_file.content.name.rsplit("/", 1)[1]
        ]
        owner = bearer_client(consumer)
        gone = owner.get(f"/api/v1/files/{idle.input_file.public_id}/content")
        assert gone.status_code == 410 and gone.json()["code"] == "file_expired"
        assert (
            owner.get(f"/api/v1/files/{idle.input_file.public_id}").json()["sha256"] == idle.input_file.sha256
        )
        assert expire_files() == {"expired": 0}  # the task: the rest is not due yet by the real clock

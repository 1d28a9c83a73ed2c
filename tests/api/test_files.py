"""The files API (issue 10): upload (batch checked line by line, nothing kept when refused),
list/detail/content for the owner only, and jobs that take an input file."""

import hashlib
import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from market.models import DataFile, JobRequest
from tests.batches import MODEL, batch_jsonl, batch_line
from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, job_body

pytestmark = pytest.mark.django_db

FILES = "/api/v1/files"


@pytest.fixture
def consumer():
    return ConsumerFactory(balance=Decimal("1000"))


@pytest.fixture
def client(consumer):
    return bearer_client(consumer)


def upload(client, data: bytes, *, purpose="batch", name="requests.jsonl"):
    return client.post(
        FILES, {"file": SimpleUploadedFile(name, data), "purpose": purpose}, format="multipart"
    )


def stored(location) -> list:
    return [path for path in location.rglob("*") if path.is_file()] if location.exists() else []


class TestFileUpload:
    def test_keeps_a_batch_file_with_its_sha256_and_sizes(self, client, consumer, file_storage):
        data = batch_jsonl(3, max_tokens=16)

        response = upload(client, data)

        assert response.status_code == 201, response.json()
        body = response.json()
        data_file = DataFile.objects.get(pk=int(body["id"].removeprefix("file-")), owner=consumer)
        assert body["object"] == "file" and body["purpose"] == "batch"
        assert body["sha256"] == data_file.sha256 == hashlib.sha256(data).hexdigest()
        assert (body["bytes"], body["lines"], body["model_name"]) == (len(data), 3, MODEL)
        assert body["max_tokens_total"] == 48
        assert body["prompt_tokens_estimate"] > 0
        assert [path.read_bytes() for path in stored(file_storage)] == [data]

    def test_a_malformed_line_is_a_400_naming_it_and_nothing_is_kept(self, client, consumer, file_storage):
        lines = batch_jsonl(5).decode().splitlines()
        lines[3] = '{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {'

        response = upload(client, ("\n".join(lines) + "\n").encode())

        body = assert_error(response, 400, "batch_line_invalid")
        assert body["extra"]["line"] == 4 and body["message"].startswith("Line 4:")
        assert not DataFile.objects.filter(owner=consumer).exists()
        assert stored(file_storage) == []

    @pytest.mark.parametrize(
        ("line", "needle"),
        [
            ({**batch_line(2), "method": "GET"}, "method"),
            ({**batch_line(2), "url": "/v1/embeddings"}, "url"),
            ({**batch_line(2), "custom_id": "request-1"}, "repeats line 1"),
            (batch_line(2, model="other-model"), "one model per file"),
            (batch_line(2, max_tokens=0), "max_tokens"),
            (batch_line(2, messages=[]), "messages"),
            (batch_line(2, chat=False, prompt=""), "prompt"),
            (batch_line(2, stream=True), "stream"),
            ({"custom_id": "request-2", "method": "POST", "url": "/v1/completions"}, "missing body"),
        ],
    )
    def test_each_rule_names_the_line(self, client, file_storage, line, needle):
        data = (json.dumps(batch_line(1)) + "\n" + json.dumps(line) + "\n").encode()

        body = assert_error(upload(client, data), 400, "batch_line_invalid")

        assert body["extra"]["line"] == 2 and needle in body["message"]
        assert stored(file_storage) == []

    def test_an_oversized_file_is_refused(self, client, consumer, settings, file_storage):
        settings.CPX_FILE_MAX_BYTES = 1000

        response = upload(client, batch_jsonl(20))

        assert_error(response, 413, "file_too_large")
        assert not DataFile.objects.filter(owner=consumer).exists()
        assert stored(file_storage) == []

    def test_too_many_lines_are_refused(self, client, settings, file_storage):
        settings.CPX_BATCH_MAX_LINES = 4

        assert_error(upload(client, batch_jsonl(5)), 400, "batch_too_many_lines")

    def test_a_dataset_is_kept_as_opaque_bytes(self, client, file_storage):
        data = bytes(range(256)) * 4

        response = upload(client, data, purpose="dataset", name="train.bin")

        assert response.status_code == 201
        assert (response.json()["lines"], response.json()["sha256"]) == (0, hashlib.sha256(data).hexdigest())


class TestFileAccess:
    def test_the_owner_reads_its_file_and_another_user_gets_404(self, client, file_storage):
        data = batch_jsonl(2)
        file_id = upload(client, data).json()["id"]
        stranger = bearer_client(ConsumerFactory())

        own = client.get(f"{FILES}/{file_id}/content")

        assert own.status_code == 200 and b"".join(own.streaming_content) == data
        assert own["X-CPX-SHA256"] == hashlib.sha256(data).hexdigest()
        assert client.get(f"{FILES}/{file_id}").json()["id"] == file_id
        assert_error(stranger.get(f"{FILES}/{file_id}"), 404, "file_not_found")
        assert_error(stranger.get(f"{FILES}/{file_id}/content"), 404, "file_not_found")
        assert [f["id"] for f in client.get(FILES).json()["results"]] == [file_id]
        assert stranger.get(FILES).json()["results"] == []


class TestJobWithInputFile:
    def test_sizes_the_job_from_the_file(self, client, consumer, file_storage):
        file_body = upload(client, batch_jsonl(10, max_tokens=32)).json()

        response = client.post(
            "/api/v1/jobs",
            job_body(model_name=MODEL, workload_tokens=None, input_file_id=file_body["id"]),
            format="json",
        )

        assert response.status_code == 201, response.json()
        job = JobRequest.objects.get(pk=response.json()["id"], consumer=consumer)
        assert job.workload_tokens == file_body["prompt_tokens_estimate"] + 320
        assert response.json()["input_file_id"] == file_body["id"]

    def test_refuses_a_file_of_another_model(self, client, consumer, file_storage):
        file_id = upload(client, batch_jsonl(2)).json()["id"]

        response = client.post("/api/v1/jobs", job_body(input_file_id=file_id), format="json")

        assert_error(response, 400, "batch_model_mismatch")
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_refuses_another_users_file(self, client, consumer, file_storage):
        other = bearer_client(ConsumerFactory())
        file_id = upload(other, batch_jsonl(2)).json()["id"]

        response = client.post(
            "/api/v1/jobs", job_body(model_name=MODEL, input_file_id=file_id), format="json"
        )

        assert_error(response, 404, "file_not_found")
        assert not JobRequest.objects.filter(consumer=consumer).exists()

    def test_the_quote_takes_the_file_too(self, client, file_storage):
        file_id = upload(client, batch_jsonl(10, max_tokens=32)).json()["id"]

        quoted = client.post(
            "/api/v1/quote",
            job_body(model_name=MODEL, workload_tokens=None, input_file_id=file_id),
            format="json",
        )
        unsized = client.post(
            "/api/v1/quote", job_body(model_name=MODEL, workload_tokens=None), format="json"
        )

        assert quoted.status_code == 200, quoted.json()
        assert_error(unsized, 400, "invalid")  # without the file an inference job must state its tokens

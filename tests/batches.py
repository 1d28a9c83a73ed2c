"""OpenAI Batch input files for the tests (issue 10)."""

import json
from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile

from market.services.files import file_upload
from tests.factories import job_submit
from tests.llm import MODEL


def batch_line(
    index: int, *, model: str = MODEL, chat: bool = True, max_tokens: int | None = 8, **body
) -> dict:
    request = {"model": model, **body}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    if chat:
        request.setdefault(
            "messages", [{"role": "user", "content": f"Say something about edge power {index}."}]
        )
        url = "/v1/chat/completions"
    else:
        request.setdefault("prompt", f"Edge power, part {index}:")
        url = "/v1/completions"
    return {"custom_id": f"request-{index}", "method": "POST", "url": url, "body": request}


def batch_jsonl(count: int, **options) -> bytes:
    return "".join(json.dumps(batch_line(i, **options)) + "\n" for i in range(1, count + 1)).encode()


def batch_job(*, consumer, data: bytes, now, budget=Decimal("10"), model: str = MODEL, **overrides):
    """A batch inference job: `data` uploaded as the consumer's batch file, the job submitted with it."""
    data_file = file_upload(
        owner=consumer, purpose="batch", upload=SimpleUploadedFile("requests.jsonl", data), now=now
    )
    return job_submit(
        consumer=consumer,
        now=now,
        model_name=model,
        input_file_id=data_file.public_id,
        budget=budget,
        **overrides,
    )


def answer(custom_id: str, *, prompt_tokens=10, completion_tokens=8, status_code=200) -> dict:
    """An OpenAI Batch output line as an agent sends it (hand-made: the exchange's checks are under test)."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    usage["total_tokens"] = prompt_tokens + completion_tokens
    body = {"id": f"chatcmpl-{custom_id}", "object": "chat.completion", "choices": [], "usage": usage}
    if status_code != 200:
        body = {"error": {"message": "refused"}}
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": "", "body": body},
        "error": None,
    }


def expected_charge(lease) -> Decimal:
    """The stated metering rule, computed here independently of the service: billable device-hours =
    expected_device_hours × metered tokens / workload_tokens (seconds to 1e-3 s, rounded down;
    hours to 1e-6 h), charge = unit_price_paid × that, to the money quantum."""
    tokens = lease.tokens_in + lease.tokens_out
    seconds = (lease.expected_device_hours * 3600 * tokens / lease.job.workload_tokens).quantize(
        Decimal("0.001"), rounding="ROUND_DOWN"
    )
    hours = (seconds / 3600).quantize(Decimal("0.000001"), rounding="ROUND_HALF_EVEN")
    return (lease.unit_price_paid * hours).quantize(Decimal("0.000001"), rounding="ROUND_HALF_EVEN")

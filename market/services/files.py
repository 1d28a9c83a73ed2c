"""Files: upload (validated, hashed, nothing kept when refused), storage of results, reading by the
owner, and expiry of the bytes after CPX_FILE_TTL_DAYS.

Bytes go through Django's default storage (local files under CPX_DATA_DIR, or S3-compatible object
storage through django-storages); the DataFile row records owner, purpose, size and sha256. Who else
may read a file (the provider holding a live lease on its job) is decided in auctions, which knows
leases; this module only serves owners.
"""

import functools
import hashlib
import io
import os
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction

from config.errors import DomainError, InvalidInput, NotFound
from market.models import DataFile, JobRequest, User
from market.services.batch_input import BatchSummary, batch_parse

Purpose = DataFile.Purpose
UPLOADABLE = (Purpose.BATCH, Purpose.DATASET)
CHUNK = 1024 * 1024


class FileTooLarge(DomainError):
    code = "file_too_large"
    status = 413


class FileNotFound(NotFound):
    code = "file_not_found"


class FileExpired(DomainError):
    code = "file_expired"
    status = 410


def file_upload(*, owner: User, purpose: str, upload, now: datetime, reuse: bool = False) -> DataFile:
    """Check an uploaded file and keep it: a batch file must pass `batch_parse` line by line, a
    dataset is opaque; either is at most CPX_FILE_MAX_BYTES. A refused upload leaves nothing behind
    (no bytes in storage, no row). `upload` is a Django UploadedFile (or any file object with a name).
    With `reuse`, the owner's live file of the same purpose and sha256 is returned instead of a copy
    (a form posted twice keeps one file).

    Raises InvalidInput (purpose, name), FileTooLarge, BatchLineInvalid, BatchTooManyLines, BatchEmpty.
    """
    if purpose not in UPLOADABLE:
        raise InvalidInput(f"purpose is one of {', '.join(UPLOADABLE)}.", field="purpose")
    filename = os.path.basename(str(getattr(upload, "name", "") or "upload"))[:255] or "upload"
    size = getattr(upload, "size", None)
    limit = settings.CPX_FILE_MAX_BYTES
    if size is not None and size > limit:
        raise FileTooLarge(f"A file is at most {limit} bytes.", max_bytes=limit, bytes=size)
    digest, size = _sha256(upload, limit)
    if size == 0:
        raise InvalidInput("The file is empty.", field="file")
    if reuse:
        same = DataFile.objects.filter(owner=owner, purpose=purpose, sha256=digest, deleted_at__isnull=True)
        if (found := same.order_by("id").first()) is not None:
            return found
    summary = None
    if purpose == Purpose.BATCH:
        upload.seek(0)
        summary = batch_parse(
            getattr(upload, "file", upload),  # the raw file: its lines split on \n only
            max_lines=settings.CPX_BATCH_MAX_LINES,
            default_max_tokens=settings.CPX_BATCH_DEFAULT_MAX_TOKENS,
        )
    upload.seek(0)
    return _keep(
        owner=owner,
        purpose=purpose,
        filename=filename,
        content=File(upload),
        digest=digest,
        size=size,
        summary=summary,
        now=now,
    )


def file_store(*, owner: User, purpose: str, filename: str, data: bytes, now: datetime) -> DataFile:
    """Keep bytes CPX produced (batch results and errors, an artifact) for `owner`."""
    digest = hashlib.sha256(data).hexdigest()
    return _keep(
        owner=owner,
        purpose=purpose,
        filename=filename,
        content=ContentFile(data),
        digest=digest,
        size=len(data),
        summary=None,
        now=now,
    )


def _keep(*, owner, purpose, filename, content, digest, size, summary: BatchSummary | None, now) -> DataFile:
    name = default_storage.save(f"files/{now:%Y/%m}/{digest[:16]}-{filename}", content)
    try:
        with transaction.atomic():
            return DataFile.objects.create(
                owner=owner,
                purpose=purpose,
                filename=filename,
                content=name,
                bytes=size,
                sha256=digest,
                lines=summary.lines if summary else 0,
                model_name=summary.model if summary else "",
                prompt_tokens_estimate=summary.prompt_tokens_estimate if summary else 0,
                max_tokens_total=summary.max_tokens_total if summary else 0,
                created_at=now,
                expires_at=now + timedelta(days=settings.CPX_FILE_TTL_DAYS),
            )
    except BaseException:
        default_storage.delete(name)  # no bytes without their row
        raise


def _sha256(upload, limit: int) -> tuple[str, int]:
    upload.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise FileTooLarge(f"A file is at most {limit} bytes.", max_bytes=limit)
        digest.update(chunk)
    return digest.hexdigest(), size


def file_parse_id(value) -> int:
    """`file-12` or `12` → 12. Raises FileNotFound for anything else (an id says nothing more)."""
    text = str(value).strip()
    text = text.removeprefix("file-")
    if not text.isdigit() or len(text) > 18:
        raise FileNotFound("No such file.", file=str(value)[:40])
    return int(text)


def file_get_for_owner(*, owner: User, file_id) -> DataFile:
    """The owner's file; another user's answers like a missing one. Raises FileNotFound."""
    pk = file_parse_id(file_id)
    found = DataFile.objects.filter(pk=pk, owner=owner).first()
    if found is None:
        raise FileNotFound("No such file.", file=f"file-{pk}")
    return found


def file_open(*, data_file: DataFile):
    """An open binary file object on the bytes. Raises FileExpired once expiry deleted them."""
    if data_file.deleted_at is not None:
        raise FileExpired("The file has expired and its bytes were deleted.", file=data_file.public_id)
    return default_storage.open(data_file.content.name, "rb")


def file_read(*, data_file: DataFile) -> bytes:
    with file_open(data_file=data_file) as handle:
        return handle.read()


@functools.lru_cache(maxsize=16)
def _summary_cached(pk: int, sha256: str) -> BatchSummary:
    data_file = DataFile.objects.get(pk=pk)
    return batch_parse(
        io.BytesIO(file_read(data_file=data_file)),
        max_lines=settings.CPX_BATCH_MAX_LINES,
        default_max_tokens=settings.CPX_BATCH_DEFAULT_MAX_TOKENS,
    )


def batch_file_summary(*, data_file: DataFile) -> BatchSummary:
    """The parsed batch input (cached per process by id and sha256: a file never changes)."""
    return _summary_cached(data_file.pk, data_file.sha256)


TERMINAL_JOB_STATUSES = (
    JobRequest.Status.COMPLETED,
    JobRequest.Status.FAILED,
    JobRequest.Status.CANCELLED,
    JobRequest.Status.EXPIRED,
)


def file_expire(*, now: datetime, limit: int = 500) -> int:
    """Delete the bytes of files past `expires_at` (the row and its sha256 stay); returns how many.
    A batch input or dataset of a job still live is kept until the job ends."""
    live_inputs = (
        JobRequest.objects.exclude(status__in=TERMINAL_JOB_STATUSES)
        .filter(input_file__isnull=False)  # NOT IN (…, NULL) would match nothing
        .values("input_file_id")
    )
    due = (
        DataFile.objects.filter(expires_at__lte=now, deleted_at__isnull=True)
        .exclude(pk__in=live_inputs)
        .order_by("expires_at", "id")[:limit]
    )
    count = 0
    for data_file in due:
        default_storage.delete(data_file.content.name)
        count += DataFile.objects.filter(pk=data_file.pk, deleted_at__isnull=True).update(deleted_at=now)
    return count

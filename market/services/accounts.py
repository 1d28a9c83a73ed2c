"""Accounts and API keys."""

import hashlib
import secrets
from datetime import datetime

from django.db import transaction

from config.errors import InvalidInput, NotFound
from market.models import ApiKey, Role, User

KEY_PREFIX_BYTES = 6
KEY_SECRET_BYTES = 32


def api_key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, user: User, role: str, now: datetime, name: str = "") -> tuple[ApiKey, str]:
    """Issue a key for one of the user's roles; returns the row and the key, shown only now.

    Raises InvalidInput when the user does not hold the role.
    """
    if role not in Role.values:
        raise InvalidInput(f"Unknown role {role!r}.", field="role", choices=Role.values)
    if not user.holds_role(role):
        raise InvalidInput(f"{user.username} does not hold the {role} role.", field="role")
    prefix = secrets.token_hex(KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(KEY_SECRET_BYTES)
    key = ApiKey.objects.create(
        user=user, role=role, name=name[:100], prefix=prefix, digest=api_key_digest(secret), created_at=now
    )
    return key, f"cpx_{prefix}_{secret}"


def api_key_revoke(*, prefix: str, now: datetime, user: User | None = None) -> ApiKey:
    """Revoke a key by its prefix (only among `user`'s keys when given). Revoking twice is a no-op.

    Raises NotFound.
    """
    keys = ApiKey.objects.filter(prefix=prefix)
    if user is not None:
        keys = keys.filter(user=user)
    key = keys.first()
    if key is None:
        raise NotFound("No such API key.", prefix=prefix)
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    key.refresh_from_db()
    return key

"""The API's one pagination: `limit`/`offset`, both checked, `limit` capped.

DRF's LimitOffsetPagination ignores a malformed value and has no cap, so `?limit=100000000` returned
every row and `?limit=9223372036854775808` reached the database as a LIMIT no integer column type
holds (a 500). Here a value that is not a plain decimal integer in range answers 400 `invalid`
(naming the field), and a `limit` above CPX_API_MAX_LIMIT returns that many rows, with `next`
pointing at the rest.
"""

import re

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

# Large enough for any offset a list of this API can reach, small enough for every database's LIMIT/OFFSET.
MAX_PAGINATION_VALUE = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")


def pagination_value(raw: str, *, name: str, minimum: int) -> int:
    """`raw` as an int from `minimum` to MAX_PAGINATION_VALUE; ValidationError on `name` otherwise."""
    if _DIGITS.fullmatch(raw) is None or not minimum <= int(raw) <= MAX_PAGINATION_VALUE:
        raise ValidationError({name: [f"Must be an integer from {minimum} to {MAX_PAGINATION_VALUE}."]})
    return int(raw)


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """LimitOffsetPagination with strict `limit`/`offset` and `limit` capped at CPX_API_MAX_LIMIT."""

    limit_query_description = "Rows per page (default 50; at most CPX_API_MAX_LIMIT, 500 by default)."
    offset_query_description = "Rows to skip (an integer from 0)."

    @property
    def max_limit(self) -> int:
        return settings.CPX_API_MAX_LIMIT

    def get_limit(self, request):
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return self.default_limit
        return min(pagination_value(raw, name=self.limit_query_param, minimum=1), self.max_limit)

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param)
        if raw is None:
            return 0
        return pagination_value(raw, name=self.offset_query_param, minimum=0)

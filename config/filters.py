"""Query-parameter filters shared by the API's lists."""

from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, answered in UTC.

    Python accepts any offset up to ±23:59, PostgreSQL only up to ±15:59: `2020-01-01T00:00-23:46`
    passed on as it came made the database refuse the query (a 500, found by schemathesis). In UTC
    every valid instant is valid there; one that leaves the calendar when moved to UTC
    (`0001-01-01T00:00+15:00`) is refused here with 400.
    """

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date/time out of range.", code="invalid")


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField

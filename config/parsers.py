"""The API's JSON parser: DRF's, with the nesting depth of a body bounded before it is parsed.

Why: decoding JSON recurses once per nesting level (in C, for the stdlib decoder). A 200 KB body of
100,000 nested arrays turns into 100,000 native stack frames: with a raised recursion limit the
process dies of a stack overflow (SIGSEGV), with the default one it raises RecursionError (a 500).
No request of this API nests more than a few levels, so anything deeper than CPX_JSON_MAX_DEPTH is
refused with 400 `json_too_deep` after one linear scan, before the decoder sees it.
"""

import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

from config.errors import DomainError

# A JSON string (with its escapes) or one bracket: scanning strings whole keeps brackets inside them out.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JsonTooDeep(DomainError):
    code = "json_too_deep"
    status = 400


def json_depth_check(text: str, *, limit: int) -> None:
    """Raise JsonTooDeep when `text` nests arrays/objects more than `limit` levels (linear, no recursion).

    Malformed JSON is left to the decoder: this only counts brackets outside strings."""
    if text.count("[") + text.count("{") <= limit:
        return  # cannot be deeper than the number of openings
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                raise JsonTooDeep(f"The JSON body nests deeper than {limit} levels.", max_depth=limit)
        elif token in "]}":
            depth -= 1


class DepthLimitedJSONParser(JSONParser):
    """DRF's JSONParser (STRICT_JSON: NaN and Infinity refused) behind `json_depth_check`."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}")
        json_depth_check(text, limit=settings.CPX_JSON_MAX_DEPTH)
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}")

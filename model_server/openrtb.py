"""OpenRTB 2.5/2.6 bid request parsing and validation.

    parse_bid_request(raw: bytes | bytearray | memoryview | str) -> dict
        orjson-decodes and validates; raises InvalidJsonError / MissingFieldError.
    validate_bid_request(obj: object, where: str = "") -> dict
        the same checks on an already-decoded object (training data).

Only what OpenRTB requires is enforced (`id` string, `imp` non-empty array of objects, each
`imp[].id` string); everything else is read tolerantly by the feature pipeline, so both 2.5 and
2.6 shapes pass.
"""

from __future__ import annotations

from typing import Any

import orjson

from model_server.errors import InvalidJsonError, MissingFieldError


def parse_bid_request(raw: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Decode one bid request's JSON bytes and check the fields OpenRTB requires."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJsonError(f"bid request is not valid JSON: {exc}") from None
    # The usual request passes validate_bid_request's checks; this is the same test inline
    # (orjson makes exact dicts, lists and strs). Anything else goes through it for the error.
    if type(obj) is dict and type(obj.get("id")) is str:
        imps = obj.get("imp")
        if type(imps) is list and len(imps) == 1:
            imp = imps[0]
            if type(imp) is dict and type(imp.get("id")) is str:
                return obj
    return validate_bid_request(obj)


def validate_bid_request(obj: object, where: str = "") -> dict[str, Any]:
    """Check an already-decoded bid request; `where` prefixes field names (e.g. "request.")."""
    if not isinstance(obj, dict):
        raise InvalidJsonError(
            f"bid request must be a JSON object, got {_json_type(obj)}"
            + (f" at {where.rstrip('.')}" if where else "")
        )
    if not isinstance(obj.get("id"), str):
        raise MissingFieldError(f"{where}id", f"required field '{where}id' (string) is missing")
    imps = obj.get("imp")
    if not isinstance(imps, list) or not imps:
        raise MissingFieldError(
            f"{where}imp", f"required field '{where}imp' (non-empty array) is missing or empty"
        )
    for i, imp in enumerate(imps):
        if not isinstance(imp, dict):
            raise MissingFieldError(f"{where}imp[{i}]", f"'{where}imp[{i}]' must be an object")
        if not isinstance(imp.get("id"), str):
            raise MissingFieldError(
                f"{where}imp[{i}].id", f"required field '{where}imp[{i}].id' (string) is missing"
            )
    return obj


def _json_type(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, (int, float)):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list):
        return "an array"
    return type(obj).__name__

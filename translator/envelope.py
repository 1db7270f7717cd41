"""The legacy response envelope: success and error answers in the shapes legacy clients parse, as JSON or XML."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from aiohttp import web

# "mixed": a list for missing or malformed parameters, an int otherwise (RULINGS 2, for commands
# whose errors the contract shows no example of).
Shape = Literal["list", "int", "mixed"]

# Hard failures: the request never reached a working handler (supporting-commands.md §0).
INVALID_JSON = 100000
INVALID_METHOD = 100001
HANDLER_MISSING = 100002
UNKNOWN_COMMAND = 100003
COMPONENT_FAILED = 100004
UNEXPECTED_FAULT = 100005
NOT_AUTHENTICATED = 99998
NOT_PERMITTED = 99999


class LegacyError(Exception):
    """A handler error: answered with HTTP 200 and the command's error shape."""

    def __init__(
        self,
        codes: Sequence[int],
        texts: Sequence[str],
        extra: Mapping[str, Any] | None = None,
        *,
        malformed: bool = True,
    ) -> None:
        super().__init__(", ".join(texts))
        self.codes = list(codes)
        self.texts = list(texts)
        self.extra = dict(extra or {})
        # True when every problem is a missing or malformed parameter (decides the "mixed" shape).
        self.malformed = malformed


class AuthError(Exception):
    """99998 or 99999: always a single int, whatever the command."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class HardFailure(Exception):
    """A 1000xx failure with a real HTTP status."""

    def __init__(self, code: int, text: str, status: int) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.status = status


def error_body(error: LegacyError, shape: Shape) -> dict[str, Any]:
    """RULINGS 2: a list command names every problem in ascending order; an int command the first failing check."""
    pairs = sorted(dict(zip(error.codes, error.texts, strict=True)).items())
    if shape == "list" or (shape == "mixed" and error.malformed):
        body: dict[str, Any] = {
            "Success": False,
            "ErrorCode": [c for c, _ in pairs],
            "ErrorText": [t for _, t in pairs],
        }
    else:
        body = {"Success": False, "ErrorCode": pairs[0][0], "ErrorText": pairs[0][1]}
    body.update(error.extra)
    return body


def hard_failure_body(failure: HardFailure) -> dict[str, Any]:
    return {
        "Success": False,
        "ErrorCode": failure.code,
        "ErrorText": failure.text,
        "Errors": [{"Code": failure.code, "Message": failure.text}],
    }


# Characters XML 1.0 cannot carry at all, not even in CDATA or as a character reference; stored text
# (a name a client sent) may hold them, and the answer must stay well-formed.
_NOT_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_IN_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")


def _xml_text(value: str) -> str:
    return _NOT_XML_RE.sub("\ufffd", value).replace("]]>", "]]]]><![CDATA[>")


def _xml_node(name: str, value: Any) -> str:
    if isinstance(value, Mapping):
        inner = "".join(_xml_node(str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        inner = "".join(_xml_node(f"node_{i}", v) for i, v in enumerate(value))
    elif isinstance(value, bool):
        inner = f"<![CDATA[{'true' if value else 'false'}]]>"
    elif value is None:
        inner = ""
    else:
        inner = "<![CDATA[" + _xml_text(str(value)) + "]]>"
    # A key that is no XML name (a custom field ID, a client's odd key) becomes node_<key>, with
    # characters a name cannot hold as "_".
    tag = _NOT_IN_NAME_RE.sub("_", name)
    tag = tag if tag[:1].isalpha() else f"node_{tag}"
    return f"<{tag}>{inner}</{tag}>"


def to_xml(body: Mapping[str, Any]) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _xml_node("response", body)


def respond(body: Mapping[str, Any], *, status: int = 200, xml: bool = False) -> web.Response:
    if xml:
        return web.Response(text=to_xml(body), status=status, content_type="text/xml")
    return web.json_response(body, status=status)

"""A DNS stand-in for dkimpy's verify (its `dnsfunc`): answers the TXT records a test published, nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dkim


def published(records: Mapping[str, str]) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc over `records` (DNS name → TXT value), names matched in any case, with or without the root dot."""
    by_name = {name.lower().rstrip("."): value.encode("ascii") for name, value in records.items()}

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii") if isinstance(name, bytes) else name
        return by_name.get(text.lower().rstrip("."))

    return lookup


def verified(message: bytes, records: Mapping[str, str]) -> bool:
    """Whether the message's first DKIM-Signature verifies against the published records (dkimpy)."""
    return bool(dkim.verify(message, dnsfunc=published(records)))


def signature_tags(message: bytes) -> dict[str, str]:
    """The tags of the message's first DKIM-Signature header field, whitespace removed from the values."""
    parsed = dkim.DKIM(message)
    value = next(v for n, v in parsed.headers if n.lower() == b"dkim-signature")
    tags: dict[str, str] = {}
    for item in value.decode("ascii").split(";"):
        name, _, tag_value = item.partition("=")
        if name.strip():
            tags[name.strip()] = "".join(tag_value.split())
    return tags

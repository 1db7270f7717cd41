"""The command table: one row per legacy command, mapping its parameters to a gRPC call and the answer back.

Adding a command is adding a row (in the module of its domain) and two small functions:
one that builds the gRPC request from the legacy parameters, one that renders the response.
A row declares the parameters its handler reads and the keys its success answer carries: the
OpenAPI document (translator/openapi.py) is generated from them, and a handler that reads a
parameter its row does not declare fails (UndeclaredParameter), so the two cannot drift apart.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from herald.audience.v1 import audience_pb2_grpc
from herald.campaign.v1 import campaign_pb2_grpc, email_pb2_grpc
from herald.delivery.v1 import delivery_pb2_grpc
from herald.tag.v1 import tag_pb2_grpc

from services.common import auth
from services.common.grpcutil import RpcFailure, decode_error
from translator.bodies import MAX_BODY
from translator.envelope import LegacyError, Shape
from translator.identity import Caller, IdentityStore
from translator.params import ParamError, Params


def instant(ts: timestamp_pb2.Timestamp, *, is_set: bool | None = None) -> str:
    """RULINGS 3: an instant as YYYY-MM-DD HH:MM:SS in UTC; "" when unset.

    Unset is `is_set=False` (for fields with presence, pass HasField), or a zero Timestamp when
    is_set is not given. Whole seconds: the legacy format has no fraction.
    """
    if not (is_set if is_set is not None else ts.seconds or ts.nanos):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts.seconds))


# Text parameters are passed on whole (up to the request body limit): the services own the length limits.
MAX_TEXT = MAX_BODY

# "optional": no credentials needed, but credentials that are sent must be a user's and are acted on.
Scope = Literal["none", "optional", "user", "admin", "user_or_admin"]
T = TypeVar("T")

# How a parameter's value is written: "integers" and "strings" are a comma-separated string or an array,
# "json" a string holding a JSON document; "object" and "array" take `fields` (an array's items are
# objects with those fields). "any" is for answer keys whose shape varies.
Kind = Literal["string", "integer", "number", "boolean", "integers", "strings", "json", "object", "array", "any"]


@dataclass(frozen=True)
class Param:
    """A parameter a command reads, or a key its success answer carries, under its legacy spelling.

    `required` for a parameter: the command answers an error without it; for an answer key: the key is
    always there. `enum` lists the values the contract names (matched case-insensitively), `format`
    an OpenAPI format ("date", "email", "uri", ...). `family` makes the parameter a family of names
    (`CustomField<ID>`): a regular expression every lower-cased name of it matches.
    """

    name: str
    kind: Kind
    description: str = ""
    required: bool = False
    enum: tuple[str, ...] = ()
    format: str = ""
    default: str | int | bool | None = None
    fields: tuple[Param, ...] = ()
    family: str = ""


ERROR_TEXT = Param("ErrorText", "string", "Empty on success", required=True)

_FAMILIES: dict[str, re.Pattern[str]] = {}


def family_pattern(family: str) -> re.Pattern[str]:
    """A parameter family's compiled pattern: the same object for the same family, which Params.names_in needs."""
    if family not in _FAMILIES:
        _FAMILIES[family] = re.compile(family)
    return _FAMILIES[family]


# Credentials a command of each scope reads (supporting-commands.md §1): older clients send an admin
# key as APIKey, and a session may be a user's or an admin's.
CREDENTIALS: Mapping[str, tuple[str, ...]] = {
    "none": (),
    "optional": ("APIKey", "SessionID"),
    "user": ("APIKey", "SessionID"),
    "admin": ("AdminAPIKey", "APIKey", "SessionID"),
    "user_or_admin": ("APIKey", "AdminAPIKey", "SessionID"),
}
# Read by the dispatcher for every command.
COMMON_PARAMETERS = ("Command", "ResponseFormat")


class Args:
    """Typed access to the legacy parameters that records every bad one instead of stopping at the first.

    A missing required parameter or a malformed value yields the type's zero value and a recorded
    problem; `Command.codes` maps the lower-cased parameter name to its legacy code.
    """

    def __init__(self, params: Params) -> None:
        # The dispatcher gives a handler its row's declared parameters only (Params.declared_only).
        self.params = params
        self.problems: list[ParamError] = []

    def _take(self, read: Callable[[], T | None], zero: T) -> T:
        try:
            value = read()
        except ParamError as exc:
            self.problems.append(exc)
            return zero
        return zero if value is None else value

    def str(
        self, name: builtins.str, *, required: builtins.bool = False, max_len: builtins.int = 65535
    ) -> builtins.str:
        return self._take(lambda: self.params.str(name, required=required, max_len=max_len), "")

    def int(
        self,
        name: builtins.str,
        *,
        required: builtins.bool = False,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
    ) -> builtins.int:
        return self._take(lambda: self.params.int(name, required=required, min=min, max=max), 0)

    def bool(self, name: builtins.str, *, default: builtins.bool) -> builtins.bool:
        return self.params.bool(name, default=default)

    def int_list(
        self, name: builtins.str, *, required: builtins.bool = False, max_items: builtins.int = 10000
    ) -> list[builtins.int]:
        return self._take(lambda: self.params.int_list(name, required=required, max_items=max_items), [])

    def str_list(self, name: builtins.str, *, required: builtins.bool = False) -> list[builtins.str]:
        return self._take(lambda: self.params.str_list(name, required=required), [])

    def has(self, name: builtins.str) -> builtins.bool:
        return self.params.has(name)


@dataclass
class Stubs:
    """gRPC stubs of the services, one channel each."""

    campaign: campaign_pb2_grpc.CampaignServiceStub
    # EmailService is served by the campaign service, on the campaign channel.
    email: email_pb2_grpc.EmailServiceStub
    tag: tag_pb2_grpc.TagServiceStub
    audience: audience_pb2_grpc.AudienceServiceStub
    delivery: delivery_pb2_grpc.DeliveryServiceStub


@dataclass
class Context:
    """What a handler may use: the caller, its gRPC metadata, the stubs, the identity store and the public URL."""

    caller: Caller | None
    metadata: tuple[tuple[str, str], ...]
    stubs: Stubs
    identity: IdentityStore
    public_url: str
    # None: the default deadline of the call's kind (HERALD_GRPC_READ_TIMEOUT_SECONDS, _WRITE_TIMEOUT_SECONDS).
    timeout: float | None = None
    # The client's address (behind trusted proxies, the one they forward): login throttling counts by it.
    client_address: str = ""

    async def call(self, method: Callable[..., Any], request: Message) -> Any:
        """Calls a unary gRPC method on the caller's behalf.

        wait_for_ready: a service that is restarting (or still starting) is waited for until the
        deadline instead of failing the request at once.
        """
        return await method(request, metadata=self.metadata, timeout=self.timeout, wait_for_ready=True)

    def as_translator(self, user_id: int | None = None) -> Context:
        """The context for a call the translator makes for its own needs while serving the command (a
        lookup behind the command's own RPC, the audience behind campaign.recipients.get), not the call
        the caller asked for: the caller's principal, or user `user_id`'s, marked as the translator's.

        Services do not ask such a token for the caller's permission for that RPC (the command's was
        checked) and accept it on internal RPCs, as they do for each other (services/common/permissions.py).
        """
        if self.caller is None:
            raise RuntimeError("as_translator needs an authenticated caller")
        principal = auth.Principal(user_id=user_id) if user_id is not None else self.caller.principal()
        token = self.identity.service_token(principal)
        metadata = tuple(pair for pair in self.metadata if pair[0] != "authorization")
        return replace(self, metadata=(*metadata, ("authorization", f"Bearer {token}")))


Handler = Callable[[Args, Context], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command:
    """One legacy command.

    `codes` maps a service error reason (UPPER_SNAKE) or a lower-cased parameter name to the legacy
    code; `texts` gives each code's ErrorText, and `cause_texts`, keyed like `codes`, the text of one
    cause where a code covers several and the text should say which. `shape` is the shape of the seed's
    error example. `params` are the parameters the handler reads (credentials, Command and
    ResponseFormat come with the scope), `returns` the keys of a success answer besides Success and
    ErrorCode; `summary` says what the command does, for the OpenAPI document.
    """

    name: str
    handler: Handler
    scope: Scope = "user"
    permission: str | None = None
    shape: Shape = "list"
    codes: Mapping[str, int] = field(default_factory=dict)
    texts: Mapping[int, str] = field(default_factory=dict)
    cause_texts: Mapping[str, str] = field(default_factory=dict)
    v1_alias: bool = True
    # (requests, seconds): at most that many calls per window per user or admin (per client address
    # without credentials), else HTTP 429.
    rate_limit: tuple[int, float] | None = None
    # v1-style handlers also answer errors as `Errors: [{Code, Message}]` beside the envelope.
    errors_list: bool = False
    # HTTP methods the command answers; any other method is 100001 (GET: subscribers.import.get).
    methods: frozenset[str] = frozenset({"POST"})
    summary: str = ""
    params: tuple[Param, ...] = ()
    returns: tuple[Param, ...] = ()

    @cached_property
    def parameter_names(self) -> frozenset[str]:
        """Every parameter name (lower-cased) the command's handler may read."""
        names = (*COMMON_PARAMETERS, *CREDENTIALS[self.scope], *(p.name for p in self.params if not p.family))
        return frozenset(name.lower() for name in names)

    @cached_property
    def parameter_families(self) -> tuple[re.Pattern[str], ...]:
        """The patterns of the parameter families the handler may read (each compiled once)."""
        return tuple(family_pattern(p.family) for p in self.params if p.family)

    def legacy_error(self, problems: Problems) -> LegacyError | None:
        """The LegacyError for bad parameters and/or a service's error, or None when something has no
        legacy code (a mapping bug). A parameter problem is looked up as "name:missing" /
        "name:malformed", then "name"; a service violation as "REASON@field.path", then "REASON"."""
        keys: list[tuple[str, str]] = []
        for p in problems.params:
            specific = f"{p.name}:{p.problem}"
            keys.append((specific if specific in self.codes else p.name, p.message))
        failure = problems.failure
        if failure is not None:
            details = [violation.description for violation in failure.violations] or [""]
            for (path, reason), detail in zip(failure.field_reasons(), details, strict=True):
                # "REASON@field.path" lets one reason map to different codes by the field it names.
                specific = f"{reason}@{path}"
                keys.append((specific if specific in self.codes else reason, detail or failure.message))
        codes: dict[int, str] = {}
        for key, detail in keys:
            code = self.codes.get(key)
            if code is None:
                return None
            codes.setdefault(code, self.cause_texts.get(key) or self.texts.get(code) or detail)
        malformed = problems.failure is None or problems.failure.code == grpc.StatusCode.INVALID_ARGUMENT
        return LegacyError(list(codes), list(codes.values()), malformed=malformed)


class Problems(Exception):
    """What was wrong with a request: bad parameters found by the translator and/or a service's error."""

    def __init__(self, params: list[ParamError], failure: RpcFailure | None = None) -> None:
        super().__init__("; ".join([p.message for p in params] + ([failure.message] if failure else [])))
        self.params = params
        self.failure = failure


async def validate_only(
    ctx: Context,
    method: Callable[..., Any],
    request: Message,
    *,
    judged_fields: Iterable[str] = (),
    judged_reasons: Iterable[str] = (),
) -> RpcFailure | None:
    """A service's verdict on a request it does not act on: one that sets validate_only (or preview), one
    that cannot apply (an update of email 0), or a lookup. None when the service finds nothing wrong.

    When the translator already found a bad parameter, the answer still names the service's findings on
    the rest: a list-shaped answer names every problem, an int-shaped one the first in the seed's order
    (e.g. "not found"). What the translator judged itself is left out of the verdict (see `without`).
    """
    try:
        await ctx.call(method, request)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in UNAVAILABLE_CODES:
            raise
        return without(decode_error(exc), fields=judged_fields, reasons=judged_reasons)
    return None


def without(
    failure: RpcFailure | None, *, fields: Iterable[str] = (), reasons: Iterable[str] = ()
) -> RpcFailure | None:
    """A service's verdict minus its violations of `fields` (or of a field inside one) and those with one of
    `reasons`; None when nothing is left. An error without violations counts as one violation of its own
    reason, on no field.

    Fields: the translator sent the service a placeholder for a parameter it found wrong, so the service's
    "missing" would hide the real "malformed". Reasons: what the translator checks itself, or must not tell.
    """
    if failure is None:
        return None
    flagged, hidden = tuple(fields), frozenset(reasons)

    def left_out(field: str, reason: str) -> bool:
        return reason in hidden or any(field == f or field.startswith(f + ".") for f in flagged)

    if not failure.violations:
        return None if left_out("", failure.reason) else failure
    kept = [v for v in failure.violations if not left_out(v.field, v.reason or failure.reason)]
    if len(kept) == len(failure.violations):
        return failure
    return replace(failure, violations=kept) if kept else None


def flagged_fields(args: Args, paths: Mapping[str, str]) -> list[str]:
    """The service's field paths (`paths` by lower-cased parameter name) of the parameters found wrong."""
    return [paths[p.name] for p in args.problems if p.name in paths]


def render_error_text(response: Any, args: Args) -> dict[str, Any]:
    """The success answer of a command whose seed shows only an empty ErrorText."""
    return {"ErrorText": ""}


def render_nothing(response: Any, args: Args) -> dict[str, Any]:
    """The success answer of a command that answers only Success and ErrorCode."""
    return {}


def unary(
    method: Callable[[Stubs], Callable[..., Any]],
    build: Callable[[Args], Message],
    render: Callable[[Any, Args], dict[str, Any]],
) -> Handler:
    """A handler for the common case: one gRPC call, built from the parameters, rendered back."""

    async def handle(args: Args, ctx: Context) -> dict[str, Any]:
        request = build(args)
        if args.problems:
            raise Problems(args.problems)
        response = await ctx.call(method(ctx.stubs), request)
        return render(response, args)

    return handle


# A service that is down, too slow, or stopping: a stopping gRPC server cancels the calls it still
# has, which the legacy caller should hear as a component being unavailable, not as a fault of Herald's.
UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

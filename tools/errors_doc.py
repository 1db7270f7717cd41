"""Renders docs/errors.md: every ErrorInfo reason each RPC can answer, with its status code and meaning.

The table is read from the code, not declared beside it, so it cannot fall behind: the source of services/
is parsed (ast) and, from each servicer method, every function it can reach is followed; the reasons of
the domain errors those functions raise are the RPC's. A reason's meaning is the message its raise site
gives, and its code the kind of error it is raised as.

What counts as raising a reason (services/common/errors.py): `invalid`, `not_found`, `conflict`,
`precondition` and `DomainError(kind, reason, ...)`; `FieldViolation(field, reason, ...)` and
`Violations.add(field, reason, ...)`, whose first violation becomes ErrorInfo.reason; and a call of any
function with a `reason` parameter. A reason may be a string or a module constant holding one.

What counts as reaching a function: a call of a name defined or imported in the module, of `module.name`,
of `self.name` (a method of the same class), or of `anything.name` where services/ defines methods of that
name (all of them: the analysis may list a reason an RPC never answers in practice, never omit one it
does). A call of another service's RPC through its stub (`self._audience.GetList(...)`) adds that RPC's
reasons: CallInterceptor passes a neighbour's error status through unchanged.

`python tools/errors_doc.py` rewrites the table in place; `--check` exits 1 when docs/errors.md is stale
(tests/unit/test_errors_doc.py checks the same).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"
DOC = ROOT / "docs" / "errors.md"
DOC_BEGIN = "<!-- error-reasons:begin (tools/errors_doc.py renders this from services/) -->"
DOC_END = "<!-- error-reasons:end -->"

# ErrorKind (services/common/errors.py) -> the status code CallInterceptor answers (services/common/grpcutil.py).
CODES = {
    "INVALID": "INVALID_ARGUMENT",
    "NOT_FOUND": "NOT_FOUND",
    "CONFLICT": "ALREADY_EXISTS",
    "PRECONDITION": "FAILED_PRECONDITION",
    "PERMISSION": "PERMISSION_DENIED",
    "UNAVAILABLE": "UNAVAILABLE",
}
# The kind of error each of services/common/errors.py's constructors raises (DomainError: its `kind` argument).
CONSTRUCTORS: dict[str, str | None] = {
    "invalid": "INVALID",
    "not_found": "NOT_FOUND",
    "conflict": "CONFLICT",
    "precondition": "PRECONDITION",
    "DomainError": None,
    # A violation's reason becomes ErrorInfo.reason when it is the first; most are raised as INVALID.
    "FieldViolation": "INVALID",
}
# Sets of reasons the code consults to choose a kind at run time: update_failure answers FAILED_PRECONDITION
# when every violation of an UpdateCampaign is one of STATE_REASONS.
KIND_TABLES = {("services.campaign.domain.update", "STATE_REASONS"): "PRECONDITION"}
# `anything.name(...)` is not followed for names that builtin types or the libraries services/ calls also
# define (`.get`, `.execute`, ...): following them to every same-named method of services/ would add reasons
# of unrelated code to every RPC.
LIBRARY_METHODS = frozenset(
    name for kind in (dict, list, str, bytes, set, frozenset, int, float, object) for name in dir(kind)
) | {
    "execute",
    "scalar",
    "scalars",
    "scalar_one",
    "scalar_one_or_none",
    "fetchall",
    "fetchone",
    "first",
    "one",
    "all",
    "mappings",
    "connect",
    "begin",
    "commit",
    "rollback",
    "close",
    "publish",
    "subscribe",
    "fetch",
    "ack",
    "nak",
    "run",
    "start",
    "stop",
    "send",
    "wait",
    "set",
    "cancel",
    "result",
    "read",
    "write",
    "json",
    "info",
    "debug",
    "warning",
    "error",
    "exception",
    "bind",
    "where",
    "values",
    "returning",
    "select",
}
# Raised by CallInterceptor before any RPC runs (the token and the permission table), so on every RPC.
INTERCEPTOR_MODULES = ("services.common.auth", "services.common.permissions", "services.common.grpcutil")


@dataclass(frozen=True)
class Site:
    """One place that raises a reason: as what kind of error, and with which message."""

    reason: str
    kind: str
    message: str
    # A FieldViolation (or Violations.add) not raised on the spot: its kind is the raiser's.
    violation: bool = False


@dataclass
class Function:
    qualname: str  # module:Class.name or module:name
    node: ast.FunctionDef | ast.AsyncFunctionDef
    module: Module
    cls: str = ""
    sites: list[Site] = field(default_factory=list)
    calls: set[str] = field(default_factory=set)  # qualnames
    rpcs: set[str] = field(default_factory=set)  # names of other services' RPCs called through stubs

    assignments: dict[str, list[tuple[ast.expr, ast.expr]]] | None = None

    def params(self) -> list[str]:
        return _params(self.node, method=bool(self.cls))

    def defaults(self) -> dict[str, ast.expr]:
        args = self.node.args
        positional = args.posonlyargs + args.args
        named = dict(
            zip([a.arg for a in positional[len(positional) - len(args.defaults) :]], args.defaults, strict=True)
        )
        return named | {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None}

    def kind(self) -> str | None:
        """The kind of error a helper that takes a reason raises: a constructor's, or the one ErrorKind it names."""
        if self.node.name in CONSTRUCTORS:
            return CONSTRUCTORS[self.node.name]
        kinds = {
            n.attr
            for n in ast.walk(self.node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "ErrorKind"
        }
        kinds |= {
            kind
            for n in ast.walk(self.node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            for kind in [CONSTRUCTORS.get(n.func.id)]
            if kind
        }
        return kinds.pop() if len(kinds) == 1 else None


@dataclass
class Module:
    name: str
    tree: ast.Module
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> module, or module:name
    constants: dict[str, str] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)  # "name" or "Class.name"
    # Module-level names whose value refers to functions (a dispatch table such as _FIELD_CHECKS).
    tables: dict[str, ast.expr] = field(default_factory=dict)


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef, *, method: bool) -> list[str]:
    names = [a.arg for a in node.args.posonlyargs + node.args.args]
    if method and names[:1] in (["self"], ["cls"]):
        names = names[1:]
    return names + [a.arg for a in node.args.kwonlyargs]


def _names(node: ast.AST, name: str) -> bool:
    """Whether the code under node refers to name."""
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _class_name(node: ast.expr | None) -> str:
    """The class an annotation or constructor call names (its last dotted part), or ""."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1]
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _upper_snake(value: object) -> bool:
    return isinstance(value, str) and value.replace("_", "").isalnum() and value.isupper() and len(value) > 3


def _message(node: ast.expr | None) -> str:
    """The message a raise site gives, f-string parts shown as {name}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            str(part.value) if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
            for part in node.values
            if isinstance(part, ast.Constant | ast.FormattedValue)
        )
    return ""


class Program:
    """Every module of services/, its functions, and what each raises and calls."""

    def __init__(self, root: Path = SERVICES) -> None:
        self.modules: dict[str, Module] = {}
        for path in sorted(root.rglob("*.py")):
            module = Module(_module_name(path, root.parent), ast.parse(path.read_text(), str(path)))
            self.modules[module.name] = module
        for module in self.modules.values():
            self._index(module)
        # Classes with a `reason` field (FieldViolation, DomainError, FieldProblem, ...): their fields in order.
        self.classes_by_name: dict[str, list[list[str]]] = defaultdict(list)
        for module in self.modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.ClassDef):
                    fields = [
                        item.target.id
                        for item in node.body
                        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                    ]
                    if "reason" in fields:
                        self.classes_by_name[node.name].append(fields)
        self.methods: dict[str, list[Function]] = defaultdict(list)
        for function in self.functions():
            if function.cls:
                self.methods[function.node.name].append(function)
        self.rpc_methods = self._servicer_methods()
        self.attribute_types = self._attribute_types()
        for function in self.functions():
            self._scan(function)
        self.by_qualname = {f.qualname: f for f in self.functions()}
        for function in list(self.functions()):
            self._raised_violations(function)

    def functions(self) -> Iterator[Function]:
        for module in self.modules.values():
            yield from module.functions.values()

    def _index(self, module: Module) -> None:
        for node in module.tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    package = module.name.split(".")
                    base = ".".join([*package[: len(package) - node.level + 1], node.module])
                for alias in node.names:
                    module.aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if not isinstance(target, ast.Name) or node.value is None:
                        continue
                    if isinstance(node.value, ast.Constant) and _upper_snake(node.value.value):
                        module.constants[target.id] = str(node.value.value)
                    else:
                        module.tables[target.id] = node.value
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                module.functions[node.name] = Function(f"{module.name}:{node.name}", node, module)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        key = f"{node.name}.{item.name}"
                        module.functions[key] = Function(f"{module.name}:{key}", item, module, node.name)

    def _servicer_methods(self) -> dict[str, Function]:
        """Each RPC's servicer method by full method name (/herald.campaign.v1.CampaignService/GetCampaign)."""
        found: dict[str, Function] = {}
        for module in self.modules.values():
            for node in module.tree.body:
                if not isinstance(node, ast.ClassDef):
                    continue
                for base in node.bases:
                    if not (isinstance(base, ast.Attribute) and base.attr.endswith("Servicer")):
                        continue
                    assert isinstance(base.value, ast.Name)
                    package = module.aliases[base.value.id].rsplit(".", 1)[0]  # herald.campaign.v1
                    service = base.attr.removesuffix("Servicer")
                    for _key, function in module.functions.items():
                        if function.cls == node.name and function.node.name[:1].isupper():
                            found[f"/{package}.{service}/{function.node.name}"] = function
        return found

    # --- resolving names ---

    def _lookup(self, target: str) -> Function | Module | None:
        """A function or module by dotted path, following re-exports of packages' __init__."""
        if target in self.modules:
            return self.modules[target]
        module_name, _, name = target.rpartition(".")
        module = self.modules.get(module_name)
        if module is None:
            return None
        if name in module.functions:
            return module.functions[name]
        if name in module.aliases and module.aliases[name] != target:
            return self._lookup(module.aliases[name])
        return None

    def _constant(self, module: Module, node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and _upper_snake(node.value):
            return str(node.value)
        if isinstance(node, ast.Name):
            return self._constant_named(module, node.id, 0)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = self._resolve_name(module, node.value.id)
            if isinstance(owner, Module):
                return self._constant_named(owner, node.attr, 0)
        return None

    def _constant_named(self, module: Module, name: str, depth: int) -> str | None:
        """A module constant holding a reason, followed through imports and re-exports."""
        if name in module.constants:
            return module.constants[name]
        target = module.aliases.get(name)
        if target is None or depth > 5:
            return None
        owner, _, attr = target.rpartition(".")
        if owner in self.modules:
            return self._constant_named(self.modules[owner], attr, depth + 1)
        return None

    def _resolve_name(self, module: Module, name: str) -> Function | Module | None:
        if name in module.functions:
            return module.functions[name]
        if name in module.aliases:
            return self._lookup(module.aliases[name])
        return None

    def _referred(self, module: Module, node: ast.Name | ast.Attribute, depth: int = 0) -> list[Function]:
        """The functions a name or module attribute stands for, through module-level tables."""
        if isinstance(node, ast.Attribute):
            owner = self._resolve_name(module, node.value.id) if isinstance(node.value, ast.Name) else None
            if not isinstance(owner, Module):
                return []
            module, name = owner, node.attr
        else:
            name = node.id
        found = self._resolve_name(module, name)
        if isinstance(found, Function):
            return [found]
        table = module.tables.get(name)
        if table is None or depth > 3:
            return []
        return [
            f
            for inner in ast.walk(table)
            if isinstance(inner, ast.Name | ast.Attribute)
            for f in self._referred(module, inner, depth + 1)
        ]

    def _callees(self, function: Function, call: ast.Call) -> list[Function]:
        func = call.func
        module = function.module
        if isinstance(func, ast.Name):
            found = self._resolve_name(module, func.id)
            return [found] if isinstance(found, Function) else []
        if not isinstance(func, ast.Attribute):
            return []
        receiver = func.value
        if isinstance(receiver, ast.Name):
            if receiver.id in ("self", "cls") and function.cls:
                own = module.functions.get(f"{function.cls}.{func.attr}")
                if own is not None:
                    return [own]
            owner = self._resolve_name(module, receiver.id)
            if isinstance(owner, Module):
                found = self._resolve_name(owner, func.attr)
                return [found] if isinstance(found, Function) else []
        if func.attr in LIBRARY_METHODS:
            return []
        return list(self.methods.get(func.attr, []))

    def _typed_callees(self, function: Function, call: ast.Call) -> list[Function]:
        """`self._x.name(...)` where the class's __init__ set self._x from a parameter or call of a known class."""
        func = call.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute)):
            return []
        holder = func.value
        if not (isinstance(holder.value, ast.Name) and holder.value.id == "self" and function.cls):
            return []
        cls = self.attribute_types.get((function.module.name, function.cls, holder.attr))
        return [m for m in self.methods.get(func.attr, []) if m.cls == cls]

    def _attribute_types(self) -> dict[tuple[str, str, str], str]:
        """(module, class, attribute) -> the class name __init__ gives self.attribute, where it says."""
        found: dict[tuple[str, str, str], str] = {}
        for function in self.functions():
            if function.node.name != "__init__" or not function.cls:
                continue
            annotations = {
                a.arg: _class_name(a.annotation) for a in function.node.args.args if a.annotation is not None
            }
            for node in ast.walk(function.node):
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                    continue
                target = node.targets[0]
                if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)):
                    continue
                value = node.value
                cls = ""
                if isinstance(value, ast.Name):
                    cls = annotations.get(value.id, "")
                elif isinstance(value, ast.Call):
                    cls = _class_name(value.func)
                if cls:
                    found[(function.module.name, function.cls, target.attr)] = cls
        return found

    # --- what a function raises and calls ---

    def _scan(self, function: Function) -> None:
        module = function.module
        rpc_names = {method.rsplit("/", 1)[1] for method in self.rpc_methods}
        nested = {
            node.name: node
            for node in ast.walk(function.node)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node is not function.node
        }
        # A FieldViolation built inside a DomainError(...) is raised as that error's kind, not as INVALID.
        inside_errors = {
            id(inner)
            for node in ast.walk(function.node)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DomainError"
            for inner in ast.walk(node)
            if inner is not node
        }
        for node in ast.walk(function.node):
            if id(node) in inside_errors and isinstance(node, ast.Call):
                continue
            if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
                # A function named without being called (a callback, or a table of them) is reached too.
                for referred in self._referred(module, node):
                    function.calls.add(referred.qualname)
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if isinstance(node.func, ast.Attribute) and name in rpc_names and name[:1].isupper():
                function.rpcs.add(name)
            callees = self._callees(function, node)
            typed = self._typed_callees(function, node)
            for callee in typed or callees:
                function.calls.add(callee.qualname)
            # For what a call raises, a library-named method (`violations.add`) counts too.
            takers = callees or (self.methods.get(name, []) if isinstance(node.func, ast.Attribute) else [])
            helpers = [c for c in typed or takers if "reason" in c.params()]
            if isinstance(node.func, ast.Name) and name in nested:
                inner = Function(f"{function.qualname}.{name}", nested[name], module)
                if "reason" in inner.params():
                    helpers.append(inner)
            signatures = [(c.params(), c.defaults(), c.kind(), self._messages_of(c)) for c in helpers]
            if name in self.classes_by_name:
                signatures += [(fields, {}, CONSTRUCTORS.get(name), []) for fields in self.classes_by_name[name]]
            for params, defaults, kind, messages in signatures:
                self._reason_argument(function, node, params, defaults, kind, messages)

    def _aggregator_kind(self, function: Function) -> str | None:
        """The fixed kind of a function that raises violations it is given (preview_failure: PRECONDITION)."""
        for node in ast.walk(function.node):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DomainError" and len(node.args) > 1:
                kind, reason = node.args[0], node.args[1]
                if (
                    isinstance(kind, ast.Attribute)
                    and isinstance(reason, ast.Attribute)
                    and reason.attr == "reason"
                ):
                    return kind.attr
        return None

    def _raised_violations(self, function: Function) -> None:
        """`raise preview_failure(problems)`: the violations in `problems` are raised as preview_failure's kind."""
        by_name = self.by_qualname
        for node in ast.walk(function.node):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            for aggregator in self._callees(function, node):
                kind = self._aggregator_kind(aggregator)
                if kind is None or kind == "INVALID":
                    continue
                sources: list[ast.expr] = [node.args[0]]
                if isinstance(node.args[0], ast.Name):
                    sources = [value for _t, value in self._assignments(function).get(node.args[0].id, ())]
                for source in sources:
                    for call in ast.walk(source):
                        if not isinstance(call, ast.Call):
                            continue
                        for producer in self._callees(function, call):
                            for name in self.reachable(producer):
                                for site in by_name[name].sites:
                                    if site.violation:
                                        function.sites.append(Site(site.reason, kind, site.message))

    def _messages_of(self, helper: Function) -> list[str]:
        """The messages a helper that takes a reason gives its errors (for callers that pass no message)."""
        found = []
        for node in ast.walk(helper.node):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg in ("message", "description"):
                        found.append(self._message(helper, keyword.value))
                found += [self._message(helper, arg) for arg in node.args if isinstance(arg, ast.JoinedStr)]
        return [message for message in found if message]

    def _message(self, function: Function, node: ast.expr | None, line: int = 0) -> str:
        """A message as the code writes it; for a local variable, the text assigned last before `line`."""
        if isinstance(node, ast.Name):
            assigned = [
                (value.lineno, _message(value))
                for _target, value in self._assignments(function).get(node.id, ())
                if _message(value) and (not line or value.lineno < line)
            ]
            return max(assigned)[1] if assigned else ""
        return _message(node)

    def _caller_messages(self) -> dict[str, str]:
        """For a reason raised with a message its function was given (`_bundle_error(message)`): what a
        caller gives."""
        wanting = {
            f.node.name: f
            for f in self.functions()
            if "message" in f.params() and any(not site.message for site in f.sites)
        }
        found: dict[str, str] = {}
        for function in self.functions():
            for node in ast.walk(function.node):
                if not isinstance(node, ast.Call):
                    continue
                helper = wanting.get(getattr(node.func, "id", getattr(node.func, "attr", "")))
                if helper is None:
                    continue
                at = helper.params().index("message")
                bound = {k.arg: k.value for k in node.keywords} | dict(enumerate(node.args))
                message = self._message(function, bound.get(at, bound.get("message")), node.lineno)
                for site in helper.sites:
                    if message and not site.message:
                        found.setdefault(site.reason, message)
        return found

    def _tuple_messages(self) -> dict[str, str]:
        """Messages paired with a reason in a tuple (`return ("IMPORT_MAPPING_INVALID", "...")`)."""
        found: dict[str, str] = {}
        for module in self.modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Tuple) and len(node.elts) >= 2:
                    reason = self._constant(module, node.elts[0])
                    message = _message(node.elts[1])
                    if reason and message:
                        found.setdefault(reason, message)
        return found

    def _reason_argument(
        self,
        function: Function,
        call: ast.Call,
        params: list[str],
        defaults: dict[str, ast.expr],
        kind: str | None,
        callee_messages: list[str],
    ) -> None:
        """A call of anything that takes a `reason` (a function's parameter, a dataclass's field) raises it."""
        if "reason" not in params:
            return
        bound = {params[i]: arg for i, arg in enumerate(call.args) if i < len(params)}
        bound |= {k.arg: k.value for k in call.keywords if k.arg}
        node = bound.get("reason", defaults.get("reason"))
        if node is None:
            return
        message = self._message(function, bound.get("message") or bound.get("description"), call.lineno)
        if not message and callee_messages:
            message = callee_messages[0]
        if kind is None:
            kind_node = bound.get("kind")
            kind = kind_node.attr if isinstance(kind_node, ast.Attribute) else "INVALID"
        for reason in self._reasons_in(function, node, 0):
            function.sites.append(
                Site(reason, kind, message, violation="field" in params[:1] or "field_name" in params[:1])
            )

    def _assignments(self, function: Function) -> dict[str, list[tuple[ast.expr, ast.expr]]]:
        """The function's local names and the expressions assigned to them (`for a, b in ...` included)."""
        if function.assignments is None:
            function.assignments = defaultdict(list)
            for node in ast.walk(function.node):
                pairs: list[tuple[ast.expr, ast.expr]] = []
                if isinstance(node, ast.Assign):
                    pairs = [(target, node.value) for target in node.targets]
                elif isinstance(node, ast.NamedExpr):
                    pairs = [(node.target, node.value)]
                elif isinstance(node, ast.For | ast.comprehension):
                    pairs = [(node.target, node.iter)]
                for target, value in pairs:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            function.assignments[name.id].append((target, value))
        return function.assignments

    def _reasons_in(self, function: Function, node: ast.expr, depth: int) -> set[str]:
        """The reason strings an expression can evaluate to: constants, module constants and tables of them,
        local variables assigned from those, and what functions called there return."""
        if depth > 4:
            return set()
        module = function.module
        if isinstance(node, ast.Constant):
            return {str(node.value)} if _upper_snake(node.value) else set()
        if isinstance(node, ast.Name | ast.Attribute):
            constant = self._constant(module, node)
            if constant is not None:
                return {constant}
            if isinstance(node, ast.Name):
                table = module.tables.get(node.id)
                if table is not None:
                    return self._reasons_in(function, table, depth + 1)
                found: set[str] = set()
                for _target, value in self._assignments(function).get(node.id, ()):
                    found |= self._reasons_in(function, value, depth + 1)
                return found
            return set()
        if isinstance(node, ast.Call):
            found = set()
            for callee in self._callees(function, node):
                for ret in ast.walk(callee.node):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        found |= self._reasons_in(callee, ret.value, depth + 1)
            return found
        if isinstance(node, ast.Subscript):
            return self._reasons_in(function, node.value, depth + 1)
        return {
            reason
            for child in ast.iter_child_nodes(node)
            if isinstance(child, ast.expr)
            for reason in self._reasons_in(function, child, depth + 1)
        }

    # --- per RPC ---

    def reachable(self, start: Function) -> set[str]:
        seen: set[str] = set()
        stack = [start.qualname]
        by_name = self.by_qualname
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(by_name[name].calls - seen)
        return seen

    def reasons_by_rpc(self) -> dict[str, dict[str, set[str]]]:
        """Every reason each RPC can answer with the kinds it can come as."""
        return {
            method: {reason: {site.kind for site in sites} for reason, sites in reasons.items()}
            for method, reasons in self.sites_by_rpc().items()
        }

    def sites_by_rpc(self) -> dict[str, dict[str, set[Site]]]:
        """The sites of every reason each RPC can answer, its neighbours' included, the interceptor's excluded."""
        own: dict[str, dict[str, set[Site]]] = {}
        calls: dict[str, set[str]] = {}
        for method, function in self.rpc_methods.items():
            reached = [self.by_qualname[name] for name in self.reachable(function)]
            sites: dict[str, set[Site]] = defaultdict(set)
            for f in reached:
                for site in f.sites:
                    sites[site.reason].add(Site(site.reason, site.kind, site.message))
            for (module_name, table), kind in KIND_TABLES.items():
                if any(f.module.name == module_name and _names(f.node, table) for f in reached):
                    for reason in self._table_reasons(module_name, table):
                        if reason in sites:
                            sites[reason].add(Site(reason, kind, ""))
            own[method] = sites
            calls[method] = {rpc for f in reached for rpc in f.rpcs}
        by_short: dict[str, list[str]] = defaultdict(list)
        for method in self.rpc_methods:
            by_short[method.rsplit("/", 1)[1]].append(method)
        changed = True
        while changed:
            changed = False
            for method, names in calls.items():
                for other in (o for name in names for o in by_short[name] if o != method):
                    for reason, passed in list(own[other].items()):
                        if not passed <= own[method].get(reason, set()):
                            own[method].setdefault(reason, set()).update(passed)
                            changed = True
        interceptor = self.interceptor_reasons()
        return {
            method: {reason: found for reason, found in reasons.items() if reason not in interceptor}
            for method, reasons in own.items()
        }

    def _table_reasons(self, module_name: str, table: str) -> set[str]:
        node = self.modules[module_name].tables[table]
        return {str(n.value) for n in ast.walk(node) if isinstance(n, ast.Constant) and _upper_snake(n.value)}

    def interceptor_reasons(self) -> set[str]:
        return {
            site.reason
            for name in INTERCEPTOR_MODULES
            if name in self.modules
            for f in self.modules[name].functions.values()
            for site in f.sites
        }

    def sites_by_reason(self) -> dict[str, list[Site]]:
        found: dict[str, list[Site]] = defaultdict(list)
        for function in self.functions():
            for site in function.sites:
                found[site.reason].append(site)
        return found


def _row_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(program: Program) -> str:
    fallback = program._caller_messages() | program._tuple_messages()

    def row(reason: str, sites: set[Site]) -> str:
        codes = ", ".join(sorted({CODES[site.kind] for site in sites}))
        if reason == "UNAUTHENTICATED":  # rich_status (services/common/grpcutil.py) answers it as its own code
            codes = "UNAUTHENTICATED"
        messages = sorted({site.message for site in sites if site.message}, key=lambda m: (len(m), m))
        if not messages and reason in fallback:
            messages = [fallback[reason]]
        meaning = "; ".join(f"“{_row_text(m)}”" for m in messages[:3])
        if len(messages) > 3:
            meaning += f" (and {len(messages) - 3} more)"
        return f"| `{reason}` | {codes} | {meaning} |"

    everywhere = program.sites_by_reason()
    lines = ["### Every RPC", "", "| reason | code | meaning |", "|---|---|---|"]
    lines += [row(reason, set(everywhere[reason])) for reason in sorted(program.interceptor_reasons())]
    by_rpc = program.sites_by_rpc()
    services: dict[str, list[str]] = defaultdict(list)
    for method in sorted(by_rpc):
        services[method.lstrip("/").split("/")[0]].append(method)
    for service, methods in services.items():
        lines += ["", f"### {service}", ""]
        for method in methods:
            lines += [f"#### {method.rsplit('/', 1)[1]}", ""]
            if not by_rpc[method]:
                lines += ["Only the reasons of every RPC.", ""]
                continue
            lines += ["| reason | code | meaning |", "|---|---|---|"]
            lines += [row(reason, sites) for reason, sites in sorted(by_rpc[method].items())]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def with_table(doc: str, program: Program) -> str:
    start, end = doc.index(DOC_BEGIN) + len(DOC_BEGIN), doc.index(DOC_END)
    return f"{doc[:start]}\n{markdown(program)}{doc[end:]}"


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    rendered = with_table(current, Program())
    if "--check" in argv:
        if rendered != current:
            print(f"{DOC.relative_to(ROOT)} is stale: run python tools/errors_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Reads the Terraform configuration with python-hcl2 and understands the few expressions
it uses, so that tests can follow references and evaluate numbers at the variables'
defaults instead of matching text.

python-hcl2 returns blocks and attributes as dicts and lists; an attribute that is an
expression comes back as the string "${<expression>}". `parse` turns that expression into a
small syntax tree (Ref, Call, Obj, BinOp, ...); `Config.eval` evaluates it with the
variables' defaults and the locals, leaving resource attributes symbolic (Unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

OPTIONS = SerializationOptions(
    strip_string_quotes=True, with_comments=False, explicit_blocks=False
)


def load_file(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=OPTIONS)


# --- syntax tree -----------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Lit:
    """true, false, null."""

    value: Any


@dataclass(frozen=True)
class Template:
    """A quoted string; parts are str (literal text) or nodes (interpolations)."""

    parts: tuple


@dataclass(frozen=True)
class Ref:
    """A traversal: var.x, local.y.z, aws_sqs_queue.chunks.arn, aws_iam_role.lambda["w"].arn.
    Index keys are kept as ("[", key) items of `path`."""

    path: tuple

    @property
    def names(self) -> tuple:
        """The traversal without index steps: ("aws_iam_role", "lambda", "arn")."""
        return tuple(p for p in self.path if isinstance(p, str))

    def dotted(self) -> str:
        return ".".join(self.names)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class Obj:
    items: tuple  # ((key, node), ...), keys are str

    def as_dict(self) -> dict:
        return dict(self.items)


@dataclass(frozen=True)
class Tup:
    items: tuple


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any


@dataclass(frozen=True)
class Cond:
    cond: Any
    then: Any
    other: Any


@dataclass(frozen=True)
class ForExpr:
    """Kept opaque but for the collection it iterates (`for x in <collection> : ...`): the
    tests never evaluate the body."""

    text: str
    collection: Any = None


# --- tokenizer ---------------------------------------------------------------------------

_PUNCT = [
    "==", "!=", "<=", ">=", "&&", "||", "=>", "...",
    "+", "-", "*", "/", "%", "<", ">", "!", "?", ":", "=", ",", ".",
    "(", ")", "[", "]", "{", "}",
]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")


def _scan_string(text: str, i: int) -> tuple[Template, int]:
    """text[i] is the opening quote; returns the template and the index after the closing one."""
    assert text[i] == '"'
    i += 1
    parts: list = []
    buf = []
    while True:
        if i >= len(text):
            raise SyntaxError(f"unterminated string in {text!r}")
        c = text[i]
        if c == "\\":
            buf.append(text[i + 1])
            i += 2
        elif c == '"':
            if buf:
                parts.append("".join(buf))
            return Template(tuple(parts)), i + 1
        elif text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            end = _matching_brace(text, i + 1)
            parts.append(parse(text[i + 2 : end]))
            i = end + 1
        else:
            buf.append(c)
            i += 1


def _matching_brace(text: str, i: int) -> int:
    """text[i] is "{"; returns the index of its "}", skipping strings."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            _, i = _scan_string(text, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise SyntaxError(f"unbalanced braces in {text!r}")


def _tokens(text: str) -> list:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c == '"':
            tmpl, i = _scan_string(text, i)
            out.append(("str", tmpl))
        elif m := _NUMBER.match(text, i):
            out.append(("num", float(m.group())))
            i = m.end()
        elif m := _IDENT.match(text, i):
            out.append(("ident", m.group()))
            i = m.end()
        else:
            for p in _PUNCT:
                if text.startswith(p, i):
                    out.append(("op", p))
                    i += len(p)
                    break
            else:
                raise SyntaxError(f"unexpected {c!r} in {text!r}")
    return out


# --- parser ------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, value=None):
        if self.i >= len(self.toks):
            return None
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            return None
        return tok

    def take(self, value=None):
        tok = self.peek(value)
        if tok is None:
            raise SyntaxError(f"expected {value or 'more'} at token {self.i} of {self.text!r}")
        self.i += 1
        return tok

    def expr(self):
        cond = self.binary(0)
        if self.peek("?"):
            self.take("?")
            then = self.expr()
            self.take(":")
            return Cond(cond, then, self.expr())
        return cond

    _LEVELS = [["||"], ["&&"], ["==", "!="], ["<", ">", "<=", ">="], ["+", "-"], ["*", "/", "%"]]

    def binary(self, level):
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (tok := self.peek()) and tok[0] == "op" and tok[1] in self._LEVELS[level]:
            self.take()
            left = BinOp(tok[1], left, self.binary(level + 1))
        return left

    def unary(self):
        if (tok := self.peek()) and tok[0] == "op" and tok[1] in ("-", "!"):
            self.take()
            return Unary(tok[1], self.unary())
        return self.postfix(self.primary())

    def postfix(self, node):
        while True:
            if self.peek("."):
                self.take(".")
                name = self.take()[1]
                node = self._extend(node, str(name) if not isinstance(name, float) else str(int(name)))
            elif self.peek("["):
                self.take("[")
                if self.peek("*"):  # splat: res[*].attr
                    self.take("*")
                    key = Lit("*")
                else:
                    key = self.expr()
                self.take("]")
                node = self._extend(node, ("[", key))
            else:
                return node

    @staticmethod
    def _extend(node, step):
        if isinstance(node, Ref):
            return Ref(node.path + (step,))
        # Attribute of a call result etc.: keep it as a pseudo-reference.
        return Ref((node, step))

    def primary(self):
        kind, value = self.take()
        if kind == "num":
            return Num(value)
        if kind == "str":
            return value
        if kind == "ident":
            if value in ("true", "false", "null"):
                return Lit({"true": True, "false": False, "null": None}[value])
            if self.peek("("):
                self.take("(")
                args = []
                while not self.peek(")"):
                    args.append(self.expr())
                    if self.peek("..."):
                        self.take("...")
                    if not self.peek(")"):
                        self.take(",")
                self.take(")")
                return Call(value, tuple(args))
            return Ref((value,))
        if value == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if value == "[":
            if self.peek("for"):
                return self._for("[", "]")
            items = []
            while not self.peek("]"):
                items.append(self.expr())
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            return Tup(tuple(items))
        if value == "{":
            if self.peek("for"):
                return self._for("{", "}")
            items = []
            while not self.peek("}"):
                key_tok = self.take()
                if key_tok[0] == "ident":
                    key = key_tok[1]
                elif key_tok[0] == "str" and all(isinstance(p, str) for p in key_tok[1].parts):
                    key = "".join(key_tok[1].parts)
                else:
                    raise SyntaxError(f"unsupported object key in {self.text!r}")
                self.take(self.peek("=") and "=" or ":")
                items.append((key, self.expr()))
                if self.peek(","):
                    self.take(",")
            self.take("}")
            return Obj(tuple(items))
        raise SyntaxError(f"unexpected {value!r} in {self.text!r}")

    def _for(self, open_, close):
        """After the opening bracket: `for k, v in <collection> : ...`, up to the closing one."""
        self.take("for")
        while not self.peek("in"):
            self.take()
        self.take("in")
        collection = self.expr()
        depth = 1
        while depth:
            kind, value = self.take()
            if kind == "op" and value == open_:
                depth += 1
            elif kind == "op" and value == close:
                depth -= 1
        return ForExpr(self.text, collection)


def parse(text: str):
    p = _Parser(text)
    node = p.expr()
    if p.i != len(p.toks):
        raise SyntaxError(f"trailing tokens in {text!r}")
    return node


def node_of(value):
    """The syntax tree of a value as python-hcl2 returns it."""
    if isinstance(value, str):
        if "${" not in value:
            return Template((value,))
        # A whole-string interpolation "${expr}" is the expression itself; anything else
        # is a template. Re-quote it and let the string scanner split it.
        if value.startswith("${") and _matching_brace(value, 1) == len(value) - 1:
            return parse(value[2:-1])
        return _template_of(value)
    if isinstance(value, bool) or value is None:
        return Lit(value)
    if isinstance(value, (int, float)):
        return Num(value)
    if isinstance(value, dict):
        return Obj(tuple((k, node_of(v)) for k, v in value.items()))
    if isinstance(value, list):
        return Tup(tuple(node_of(v) for v in value))
    raise TypeError(f"unexpected HCL value {value!r}")


def _template_of(value: str) -> Template:
    parts: list = []
    i = 0
    buf = []
    while i < len(value):
        if value.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            end = _matching_brace(value, i + 1)
            parts.append(parse(value[i + 2 : end]))
            i = end + 1
        else:
            buf.append(value[i])
            i += 1
    if buf:
        parts.append("".join(buf))
    return Template(tuple(parts))


def refs_in(node) -> list[Ref]:
    """Every reference anywhere inside a node."""
    found = []

    def walk(n):
        if isinstance(n, Ref):
            found.append(n)
            for step in n.path:
                if isinstance(step, tuple):
                    walk(step[1])
                elif not isinstance(step, str):
                    walk(step)
        elif isinstance(n, Template):
            for p in n.parts:
                if not isinstance(p, str):
                    walk(p)
        elif isinstance(n, Call):
            for a in n.args:
                walk(a)
        elif isinstance(n, Obj):
            for _, v in n.items:
                walk(v)
        elif isinstance(n, Tup):
            for v in n.items:
                walk(v)
        elif isinstance(n, BinOp):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Unary):
            walk(n.operand)
        elif isinstance(n, Cond):
            walk(n.cond)
            walk(n.then)
            walk(n.other)

    walk(node)
    return found


# --- the configuration ---------------------------------------------------------------------


class Unknown(Exception):
    """Raised when a value depends on something only known after apply."""


@dataclass
class Config:
    files: dict = field(default_factory=dict)  # name -> parsed dict
    resources: dict = field(default_factory=dict)  # (type, name) -> body
    data: dict = field(default_factory=dict)  # (type, name) -> body
    variables: dict = field(default_factory=dict)  # name -> body
    locals: dict = field(default_factory=dict)  # name -> raw value

    @classmethod
    def load(cls, directory: Path) -> "Config":
        cfg = cls()
        for path in sorted(directory.glob("*.tf")):
            parsed = load_file(path)
            cfg.files[path.name] = parsed
            for block in parsed.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        cfg.resources[(rtype, name)] = body
            for block in parsed.get("data", []):
                for dtype, named in block.items():
                    for name, body in named.items():
                        cfg.data[(dtype, name)] = body
            for block in parsed.get("variable", []):
                cfg.variables.update(block)
            for block in parsed.get("locals", []):
                cfg.locals.update(block)
        return cfg

    # -- lookups --

    def resource(self, rtype: str, name: str) -> dict:
        return self.resources[(rtype, name)]

    def of_type(self, rtype: str) -> dict:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def attr(self, body: dict, *path):
        """body["a"][0]["b"]...: blocks are lists of dicts, the tests name only the keys."""
        node = body
        for key in path:
            if isinstance(node, list):
                assert len(node) == 1, f"expected one {key!r} block, found {len(node)}"
                node = node[0]
            node = node[key]
        return node

    def expr(self, body: dict, *path):
        return node_of(self.attr(body, *path))

    # -- resolution: follow locals, merge() and object literals, keep leaves as trees --

    def resolve_object(self, node) -> dict:
        """key -> syntax tree of an object-valued expression built from local references,
        merge() calls and object literals."""
        if isinstance(node, Obj):
            return dict(node.items)
        if isinstance(node, Ref) and node.names[0] == "local" and len(node.path) >= 2:
            value = node_of(self.locals[node.path[1]])
            for step in node.path[2:]:
                value = self.resolve_object(value)[step]
            return self.resolve_object(value)
        if isinstance(node, Call) and node.name == "merge":
            merged: dict = {}
            for arg in node.args:
                merged.update(self.resolve_object(arg))
            return merged
        raise TypeError(f"cannot resolve {node!r} to an object")

    def resolve(self, node):
        """Follows local.* references to the expression they stand for."""
        while isinstance(node, Ref) and node.names[0] == "local":
            value = node_of(self.locals[node.path[1]])
            for step in node.path[2:]:
                key = self.eval(step[1]) if isinstance(step, tuple) else step
                value = self.resolve_object(value)[key]
            node = value
        return node

    # -- evaluation at the variables' defaults --

    def eval(self, node, overrides: dict | None = None):
        overrides = overrides or {}
        ev = lambda n: self.eval(n, overrides)  # noqa: E731
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Lit):
            return node.value
        if isinstance(node, Template):
            return "".join(p if isinstance(p, str) else _text(ev(p)) for p in node.parts)
        if isinstance(node, Tup):
            return [ev(v) for v in node.items]
        if isinstance(node, Obj):
            return {k: ev(v) for k, v in node.items}
        if isinstance(node, Ref):
            root = node.path[0]
            if root == "var":
                name = node.path[1]
                if name in overrides:
                    return overrides[name]
                body = self.variables[name]
                if "default" not in body:
                    raise Unknown(f"var.{name} has no default")
                return body["default"]
            if root == "local":
                return ev(self.resolve(node))
            raise Unknown(node.dotted())
        if isinstance(node, Unary):
            v = ev(node.operand)
            return -v if node.op == "-" else not v
        if isinstance(node, BinOp):
            if node.op == "||":
                return bool(ev(node.left)) or bool(ev(node.right))
            if node.op == "&&":
                return bool(ev(node.left)) and bool(ev(node.right))
            a, b = ev(node.left), ev(node.right)
            return {
                "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "/": lambda: a / b, "%": lambda: a % b,
                "==": lambda: a == b, "!=": lambda: a != b,
                "<": lambda: a < b, ">": lambda: a > b,
                "<=": lambda: a <= b, ">=": lambda: a >= b,
            }[node.op]()
        if isinstance(node, Cond):
            return ev(node.then) if ev(node.cond) else ev(node.other)
        if isinstance(node, Call) and node.name == "can":
            # can(x): whether x evaluates without an error; what this reader cannot know
            # stays unknown.
            try:
                ev(node.args[0])
                return True
            except Unknown:
                raise
            except ValueError:
                return False
        if isinstance(node, Call):
            args = [ev(a) for a in node.args]
            funcs = {
                "floor": lambda x: float(int(x // 1)),
                "length": len,
                "contains": lambda seq, x: x in seq,
                "min": min,
                "max": max,
                "merge": lambda *ds: {k: v for d in ds for k, v in d.items()},
                "regex": _regex,
            }
            if node.name not in funcs:
                raise Unknown(f"{node.name}()")
            return funcs[node.name](*args)
        raise Unknown(repr(node))


def _regex(pattern: str, text: str) -> str:
    """Terraform's regex(): the first match, or an error when there is none (the simple
    patterns of this configuration mean the same in RE2 and Python)."""
    found = re.search(pattern, text)
    if found is None:
        raise ValueError(f"regex {pattern!r} does not match {text!r}")
    return found.group(0)


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

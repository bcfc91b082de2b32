"""A safe expression language for sweep constraints and objectives, evaluated with numpy over the frame.

A sweep file may come from someone else, so its expressions are never given to ``eval`` or
``DataFrame.eval`` (which allow attribute access: ``mfu.to_csv('/path')`` writes a file, and
``x.__class__.__init__.__globals__`` reaches ``os``). An expression is parsed with :mod:`ast` and only
these nodes are accepted:

- result-column names (``mfu``, ``ttft_s_p99``); a dotted column as ```parallel.tp``` in backticks or
  plainly as ``parallel.tp`` (read as the column's name, never as an attribute);
- numbers, ``True``/``False``, and strings (only as the operand of a comparison: ``status == "ok"``);
- comparisons ``< <= > >= == !=``, chained (``0.2 < mfu <= 0.6``);
- ``and``, ``or``, ``not`` (and pandas' ``&``, ``|``, ``~`` as the same);
- ``+ - * / **`` and unary ``-``/``+``, with parentheses; ``**`` takes a constant exponent of at most
  :data:`~simulator.core.limits.MAX_EXPONENT`.

No calls, attributes, subscripts, lambdas, comprehensions or dunder names. Values are float64 arrays, so no
expression can allocate more than a few columns of the frame or run for long; results match pandas'
``DataFrame.eval`` (NaN compares as in IEEE, a nullable column's NA fails every comparison, and/or/not
are three-valued). Every refusal is a one-line :class:`ClusterSimError`.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hwmodels.errors import ClusterSimError
from simulator.core.limits import MAX_EXPONENT, MAX_EXPRESSION_CHARS, MAX_EXPRESSION_NODES

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Expression", "constraint_mask", "evaluate", "objective_values", "parse_expression"]

_BACKTICK = re.compile(r"`([^`]*)`")
_PLACEHOLDER = "_bq{}_"
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_LOGIC = (ast.BitAnd, ast.BitOr)  # pandas' element-wise and/or, accepted as and/or
_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Invert,
    ast.BinOp,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,  # only a dotted column name (checked below)
    *_COMPARE,
    *_ARITH,
    *_LOGIC,
)


@dataclass(frozen=True)
class Expression:
    """A checked expression: its text, its syntax tree, and the column names it reads."""

    text: str
    tree: ast.Expression
    names: dict[str, str]  # placeholder or identifier in the tree -> column name

    @property
    def columns(self) -> list[str]:
        """The column names the expression reads, in first-use order."""
        return list(dict.fromkeys(self.names.values()))


def _refuse(text: str, why: str) -> ClusterSimError:
    shown = text if len(text) <= 100 else text[:97] + "..."
    return ClusterSimError(f"{shown!r} is not a valid expression ({why}); e.g. 'mfu > 0.4 and fits_in_memory'")


def _dotted(node: ast.AST) -> str | None:
    """``parallel.tp`` for an Attribute chain of plain names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _check_name(text: str, name: str) -> None:
    if "__" in name or not name:
        raise _refuse(text, f"name {name!r} is not allowed")


def parse_expression(text: Any) -> Expression:
    """Parse and check ``text``: only the nodes in the module docstring; a one-line error otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ClusterSimError(f"{text!r} is not a valid expression (write one as text, e.g. 'mfu > 0.4')")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ClusterSimError(f"expression {text[:40]!r}... is over {MAX_EXPRESSION_CHARS} characters")
    names: dict[str, str] = {}

    def quote(m: re.Match[str]) -> str:
        key = _PLACEHOLDER.format(len(names))
        names[key] = m.group(1)
        return key

    source = _BACKTICK.sub(quote, text)
    for column in names.values():
        _check_name(text, column)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        why = getattr(exc, "msg", None) or type(exc).__name__
        raise _refuse(text, f"syntax: {why}") from None
    _check_tree(text, tree, names)
    return Expression(text, tree, names)


def _check_tree(text: str, tree: ast.Expression, names: dict[str, str]) -> None:
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_EXPRESSION_NODES:
        raise _refuse(text, f"over {MAX_EXPRESSION_NODES} terms")
    string_operands = {id(n) for c in nodes if isinstance(c, ast.Compare) for n in (c.left, *c.comparators)}
    inside_attribute = {id(n) for a in nodes if isinstance(a, ast.Attribute) for n in ast.walk(a.value)}
    for node in nodes:
        if not isinstance(node, _NODES):
            what = type(node).__name__.lower()
            hint = {"call": "calls", "subscript": "subscripts", "lambda": "lambdas"}.get(what, f"{what} nodes")
            raise _refuse(text, f"{hint} are not allowed")
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is None:
                raise _refuse(text, "attribute access is not allowed")
            _check_name(text, node.attr)
            if id(node) not in inside_attribute:
                names[dotted] = dotted
        elif isinstance(node, ast.Name):
            if node.id not in names:
                _check_name(text, node.id)
            if id(node) not in inside_attribute:
                names.setdefault(node.id, node.id)
        elif isinstance(node, ast.Constant):
            _check_constant(text, node, string_operands)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            _check_exponent(text, node.right)


def _check_constant(text: str, node: ast.Constant, string_operands: set[int]) -> None:
    value = node.value
    if isinstance(value, bool | float) or (isinstance(value, int) and abs(value) < 10**300):
        return
    if isinstance(value, str) and id(node) in string_operands and len(value) <= 200:
        return
    raise _refuse(text, f"constant {value!r:.40} is not a number, true/false or a compared string")


def _check_exponent(text: str, node: ast.AST) -> None:
    value = node
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub | ast.UAdd):
        value = value.operand
    if not (isinstance(value, ast.Constant) and isinstance(value.value, int | float)):
        raise _refuse(text, "the exponent of ** must be a number")
    if isinstance(value.value, bool) or abs(value.value) > MAX_EXPONENT:
        raise _refuse(text, f"the exponent of ** must be a number of at most {MAX_EXPONENT}")


# ---- evaluation -----------------------------------------------------------------------------------------


@dataclass
class _Value:
    """An evaluated node: ``kind`` num (float64, NaN as in IEEE), bool (1.0/0.0) or str (object array);
    ``na``: rows missing in a nullable column (pandas' NA: comparisons with them are false, logic is
    three-valued); ``nullable``: derived from such a column, where pandas turns every NaN into NA;
    ``integral``: the values are whole numbers computed as integers (so -0 is 0, as in int64)."""

    kind: str
    data: np.ndarray
    na: np.ndarray | None = None
    integral: bool = False
    nullable: bool = False

    def with_nan_as_na(self) -> _Value:
        """A nullable value's NaN rows marked NA (pandas' masked arrays hold no NaN)."""
        if self.nullable and self.kind != "str":
            nan = np.isnan(self.data)
            if nan.any():
                self.na = nan if self.na is None else self.na | nan
        return self


def _either(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return a if b is None else b
    return a | b


def _kleene(conj: bool, values: Sequence[_Value]) -> _Value:
    """Three-valued and/or (NA and false is false, NA or true is true), as pandas' nullable booleans."""
    known = [~v.na if v.na is not None else np.ones(len(v.data), dtype=bool) for v in values]
    true = [(v.data == 1.0) & k for v, k in zip(values, known, strict=True)]
    false = [(v.data == 0.0) & k for v, k in zip(values, known, strict=True)]
    if conj:
        is_true, is_false = np.logical_and.reduce(true), np.logical_or.reduce(false)
    else:
        is_true, is_false = np.logical_or.reduce(true), np.logical_and.reduce(false)
    na = ~(is_true | is_false)
    return _Value("bool", is_true.astype(float), na if na.any() else None, nullable=any(v.nullable for v in values))


def _exponent(node: ast.AST) -> int | float:
    """The value of a checked ``**`` exponent: a number, possibly signed."""
    if isinstance(node, ast.UnaryOp):
        value = _exponent(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    return node.value  # type: ignore[attr-defined, no-any-return]


def _column(frame: pd.DataFrame, name: str) -> _Value:
    import pandas as pd

    col = frame[name]
    nullable = pd.api.types.is_extension_array_dtype(col.dtype) and not pd.api.types.is_string_dtype(col.dtype)
    na = col.isna().to_numpy(dtype=bool) if nullable else None
    if na is not None and not na.any():
        na = None
    if pd.api.types.is_bool_dtype(col.dtype):
        return _Value("bool", col.astype("float64").to_numpy(dtype=float, na_value=0.0), na, nullable=nullable)
    if pd.api.types.is_numeric_dtype(col.dtype):
        integral = pd.api.types.is_integer_dtype(col.dtype)
        return _Value("num", col.to_numpy(dtype=float, na_value=np.nan), na, integral, nullable)
    present = col.dropna()
    missing = col.isna().to_numpy(dtype=bool)
    if len(present) and present.map(lambda v: isinstance(v, bool)).all():
        values = col.map(lambda v: 0.0 if v is None or v != v else float(v)).to_numpy(dtype=float)
        return _Value("bool", values, missing if missing.any() else None)
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().sum() == present.size:
        return _Value("num", numeric.to_numpy(dtype=float, na_value=np.nan))
    return _Value("str", col.to_numpy(dtype=object), missing if missing.any() else None)


class _Evaluator:
    """Evaluates a checked :class:`Expression` over a frame, column by column, as pandas would."""

    def __init__(self, expr: Expression, frame: pd.DataFrame, what: str) -> None:
        self.expr, self.frame, self.what, self.n = expr, frame, what, len(frame)

    def error(self, why: str) -> ClusterSimError:
        return ClusterSimError(f"{self.what} {self.expr.text!r}: {why}")

    def run(self) -> _Value:
        missing = [c for c in self.expr.columns if c not in self.frame.columns]
        if missing:
            listed = ", ".join(str(c) for c in self.frame.columns if c not in ("config_hash", "reason"))
            raise self.error(f"unknown column {missing[0]!r}; use a result column: {listed}")
        with np.errstate(all="ignore"):
            return self.eval(self.expr.tree.body)

    def eval(self, node: ast.AST) -> _Value:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str):
                return _Value("str", np.full(self.n, value, dtype=object))
            kind = "bool" if isinstance(value, bool) else "num"
            return _Value(kind, np.full(self.n, float(value)), integral=isinstance(value, int) and kind == "num")
        if isinstance(node, ast.Name | ast.Attribute):
            key = node.id if isinstance(node, ast.Name) else _dotted(node)
            return _column(self.frame, self.expr.names[str(key)])
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, _LOGIC):
            return self.logic(isinstance(node.op, ast.BitAnd), [node.left, node.right])
        if isinstance(node, ast.BoolOp):
            return self.logic(isinstance(node.op, ast.And), node.values)
        if isinstance(node, ast.BinOp):
            return self.arith(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        raise self.error(f"{type(node).__name__} is not allowed")  # unreachable: checked when parsed

    def number(self, node: ast.AST) -> _Value:
        value = self.eval(node)
        if value.kind == "str":
            raise self.error("text cannot take part in arithmetic; compare it with == or !=")
        return value

    def truth(self, node: ast.AST) -> _Value:
        value = self.eval(node)
        if value.kind != "bool":
            raise self.error("and/or/not need comparisons or true/false columns on both sides")
        return value

    def arith(self, node: ast.BinOp) -> _Value:
        left = self.number(node.left)
        if isinstance(node.op, ast.Pow):  # a checked constant exponent, applied as the number it is
            power = _exponent(node.right)
            integral = left.integral and isinstance(power, int) and power >= 0
            out = _Value("num", np.power(left.data, power), left.na, integral, left.nullable)
            return self.whole(out).with_nan_as_na()
        right = self.number(node.right)
        data = np.asarray(_ARITH[type(node.op)](left.data, right.data), dtype=float)
        integral = left.integral and right.integral and not isinstance(node.op, ast.Div)
        nullable = left.nullable or right.nullable
        out = _Value("num", data, _either(left.na, right.na), integral, nullable)
        return self.whole(out).with_nan_as_na()

    @staticmethod
    def whole(value: _Value) -> _Value:
        """Integer results carry no negative zero (0 * -1 is 0 in int64, -0.0 in float64)."""
        if value.integral:
            value.data = value.data + 0.0
        return value

    def unary(self, node: ast.UnaryOp) -> _Value:
        if isinstance(node.op, ast.Not | ast.Invert):
            value = self.truth(node.operand)
            return _Value("bool", 1.0 - value.data, value.na, nullable=value.nullable)
        value = self.number(node.operand)
        data = -value.data if isinstance(node.op, ast.USub) else +value.data
        return self.whole(_Value("num", data, value.na, value.integral, value.nullable))

    def logic(self, conj: bool, operands: Sequence[ast.AST]) -> _Value:
        """``and``/``or`` of the operands (see :func:`_kleene`)."""
        return _kleene(conj, [self.truth(v) for v in operands])

    def compare(self, node: ast.Compare) -> _Value:
        """A comparison; a chain ``a < b <= c`` is ``a < b and b <= c``."""
        parts: list[_Value] = []
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.eval(right_node)
            parts.append(self.compare_pair(type(op), left, right))
            left = right
        return parts[0] if len(parts) == 1 else _kleene(True, parts)

    def compare_pair(self, op: type, left: _Value, right: _Value) -> _Value:
        nullable = left.nullable or right.nullable
        if nullable:  # pandas compares a nullable column with a NaN as NA
            left = _Value(left.kind, left.data, left.na, nullable=True).with_nan_as_na()
            right = _Value(right.kind, right.data, right.na, nullable=True).with_nan_as_na()
        na = _either(left.na, right.na)
        if (left.kind == "str") != (right.kind == "str"):
            raise self.error("compares text with a number; compare a text column with a quoted string")
        if left.kind == "str":
            if op not in (ast.Eq, ast.NotEq):
                raise self.error("text can only be compared with == or !=")
            same = np.array([a == b for a, b in zip(left.data, right.data, strict=True)], dtype=bool)
            result = same if op is ast.Eq else ~same
        else:
            result = _COMPARE[op](left.data, right.data)  # IEEE: NaN != x is true, every other comparison false
        if na is not None:
            result = result & ~na
        return _Value("bool", np.asarray(result, dtype=float), na, nullable=nullable)


def evaluate(text: str | Expression, frame: pd.DataFrame, what: str = "expression") -> _Value:
    """Evaluate an expression over ``frame``'s columns (a one-line error for an unknown column or a type clash)."""
    expr = text if isinstance(text, Expression) else parse_expression(text)
    return _Evaluator(expr, frame, what).run()


def constraint_mask(frame: pd.DataFrame, text: str | Expression) -> np.ndarray:
    """Boolean mask of the rows that meet a constraint (NA rows never do)."""
    value = evaluate(text, frame, "constraint")
    if value.kind != "bool":
        shown = text.text if isinstance(text, Expression) else text
        raise ClusterSimError(f"constraint {shown!r} must be a comparison that is true or false, e.g. 'mfu > 0.4'")
    true = value.data == 1.0
    return np.asarray(true if value.na is None else true & ~value.na, dtype=bool)


def objective_values(frame: pd.DataFrame, text: str | Expression) -> pd.Series:
    """An objective's score per row (float, NaN where missing), indexed like ``frame``."""
    import pandas as pd

    value = evaluate(text, frame, "objective")
    if value.kind == "str":
        shown = text.text if isinstance(text, Expression) else text
        raise ClusterSimError(f"objective {shown!r} is not numeric; pick a metric like tokens_per_s")
    data = value.data if value.na is None else np.where(value.na, np.nan, value.data)
    return pd.Series(data, index=frame.index, dtype=float)

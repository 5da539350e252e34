"""The genotype: the discrete cell structure a search produces and a retrain consumes.

Operation names are the only thing stored, so a published DARTS genotype pastes in
unchanged. An operation run with another activation than ReLU is named as a pair,
``sep_conv_3x3/silu`` (`search_spaces.activations`), in both text forms. Node indices
follow DARTS: 0 and 1 are the cell inputs (outputs of the two previous cells), 2.. are
intermediate nodes; each intermediate node takes two
`(op, input)` pairs, stored consecutively.

Genotypes travel in two text forms:

* JSON (``to_dict`` / ``from_dict``, ``save_genotype`` / ``load_genotype``): what our own
  runs write, because every tool can read it.
* The DARTS Python literal (``parse_darts_literal`` / ``str(genotype)``): what papers and
  repositories publish and what DARTS-style logs print, so users can paste it. It is read
  by walking the ``ast`` tree, never by evaluating it, because a pasted file is untrusted.

Every problem is reported as one `GenotypeError` line that names the file or source, so
the CLI can print it and exit without a traceback.
"""

from __future__ import annotations

import ast
import json
import operator
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.errors import GenotypeError, UnknownOperationError
from search_spaces.fileio import atomic_write_bytes

Edge = tuple[str, int]

#: Field order of the DARTS namedtuple; positional arguments of the literal follow it.
FIELDS: tuple[str, ...] = ("normal", "normal_concat", "reduce", "reduce_concat")
_EDGE_FIELDS = ("normal", "reduce")
_CONCAT_FIELDS = ("normal_concat", "reduce_concat")

#: A genotype file is a few hundred bytes; refuse to slurp something that is clearly
#: another kind of file (a dataset, a checkpoint) passed by mistake.
MAX_FILE_BYTES = 16 * 1024 * 1024


def _as_int(value: Any) -> int | None:
    """An index as a Python int, or None if it is not an integer (bools are not).

    Accepts numpy / 0-d torch integers because derivation code often produces them.
    """
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_edges(field: str, edges: Any, source: str) -> tuple[Edge, ...]:
    if isinstance(edges, (str, bytes, Mapping)) or not isinstance(edges, Iterable):
        raise GenotypeError(
            f"{source}: '{field}' must be a list of [op_name, input_index] pairs, "
            f"got {type(edges).__name__}"
        )
    out: list[Edge] = []
    for k, pair in enumerate(edges):
        if isinstance(pair, (str, bytes, Mapping)) or not isinstance(pair, (list, tuple)):
            raise GenotypeError(
                f"{source}: '{field}' edge {k} must be a pair [op_name, input_index], "
                f"got {type(pair).__name__}"
            )
        if len(pair) != 2:
            raise GenotypeError(
                f"{source}: '{field}' edge {k} must be a pair [op_name, input_index], "
                f"got {len(pair)} items"
            )
        op, idx = pair
        if not isinstance(op, str) or not op:
            raise GenotypeError(
                f"{source}: '{field}' edge {k}: op name must be a non-empty string, "
                f"got {op!r}"
            )
        index = _as_int(idx)
        if index is None:
            raise GenotypeError(
                f"{source}: '{field}' edge {k} ({op!r}): input index must be an integer, "
                f"got {idx!r}"
            )
        out.append((op, index))
    if not out:
        raise GenotypeError(f"{source}: '{field}' has no edges")
    if len(out) % 2:
        raise GenotypeError(
            f"{source}: '{field}' has {len(out)} edges; expected an even number "
            "(two per intermediate node)"
        )
    return tuple(out)


def _check_concat(field: str, concat: Any, source: str) -> tuple[int, ...]:
    if isinstance(concat, (str, bytes, Mapping)) or not isinstance(concat, Iterable):
        raise GenotypeError(
            f"{source}: '{field}' must be a list of node indices, got {type(concat).__name__}"
        )
    out: list[int] = []
    for item in concat:
        index = _as_int(item)
        if index is None:
            raise GenotypeError(
                f"{source}: '{field}' must hold integer node indices, got {item!r}"
            )
        out.append(index)
    if not out:
        raise GenotypeError(f"{source}: '{field}' is empty")
    return tuple(out)


@dataclass(frozen=True)
class Genotype:
    """Discrete DARTS cell pair; immutable and hashable so it can key caches and sets.

    Lists (or ranges, or numpy ints) passed to the constructor are normalised to tuples of
    Python ints, so two genotypes compare equal whatever container they were built from.
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        source = "genotype"
        for field in _EDGE_FIELDS:
            object.__setattr__(self, field, _check_edges(field, getattr(self, field), source))
        for field in _CONCAT_FIELDS:
            object.__setattr__(self, field, _check_concat(field, getattr(self, field), source))

    @property
    def steps(self) -> int:
        """Number of intermediate nodes per cell (two input edges each)."""
        return len(self.normal) // 2

    def canonical(self) -> Genotype:
        """This genotype with every (operation, activation) pair under its one name
        (`activations.pair_name`: "sep_conv_3x3/relu" is "sep_conv_3x3"), so one network
        has one genotype; `self` when nothing changes. Malformed pairs are left for
        `validate` to report."""
        from search_spaces.activations import PAIR_SEPARATOR, pair_name, split_pair

        if not any(PAIR_SEPARATOR in op for op, _ in self.normal + self.reduce):
            return self

        def name(op: str) -> str:
            try:
                return pair_name(*split_pair(op))
            except UnknownOperationError:
                return op

        return Genotype(
            normal=tuple((name(op), i) for op, i in self.normal),
            normal_concat=self.normal_concat,
            reduce=tuple((name(op), i) for op, i in self.reduce),
            reduce_concat=self.reduce_concat,
        )

    # ------------------------------------------------------------------ JSON form
    def to_dict(self) -> dict[str, list]:
        """JSON-ready dict (lists only), the form run directories store."""
        return {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "genotype") -> Genotype:
        """Build from a `to_dict`-shaped mapping, checking its structure strictly.

        `source` (a file name, usually) prefixes every error so the user knows which input
        is wrong. Types are checked exactly (JSON ``2.0`` or ``true`` is not an index) and
        unknown keys are refused, because a misspelt key is far likelier than a new field.
        """
        if not isinstance(data, Mapping):
            raise GenotypeError(
                f"{source}: a genotype must be an object with keys {', '.join(FIELDS)}, "
                f"got {type(data).__name__}"
            )
        missing = [f for f in FIELDS if f not in data]
        if missing:
            raise GenotypeError(f"{source}: genotype is missing key(s) {', '.join(missing)}")
        unknown = sorted(str(k) for k in data if k not in FIELDS)
        if unknown:
            raise GenotypeError(
                f"{source}: genotype has unknown key(s) {', '.join(unknown)}; "
                f"expected {', '.join(FIELDS)}"
            )
        for field in _EDGE_FIELDS + _CONCAT_FIELDS:
            if not isinstance(data[field], (list, tuple)):
                raise GenotypeError(
                    f"{source}: '{field}' must be a list, got {type(data[field]).__name__}"
                )
        return cls(
            normal=_check_edges("normal", data["normal"], source),
            normal_concat=_check_concat("normal_concat", data["normal_concat"], source),
            reduce=_check_edges("reduce", data["reduce"], source),
            reduce_concat=_check_concat("reduce_concat", data["reduce_concat"], source),
        )

    # ------------------------------------------------------------------ checks
    def validate(self, op_names: Iterable[str], *, source: str = "genotype",
                 namespace: str = "") -> None:
        """Check that this genotype can be built in a space with the given op set.

        Raises `UnknownOperationError` for an op outside `op_names` and `GenotypeError` for
        a structural problem (normal/reduce of different lengths, an edge taking its input
        from a node that is not computed yet, a concat index outside the cell). A pair
        ``op/act`` is in the op set when op is, op takes an activation (its spec, looked
        up in the op `namespace`) and act is a registered activation.
        """
        if isinstance(op_names, str):
            raise TypeError("op_names must be a collection of names, not a single string")
        names = list(op_names)
        valid = set(names)
        if len(self.normal) != len(self.reduce):
            raise GenotypeError(
                f"{source}: normal cell has {len(self.normal)} edges but reduce cell has "
                f"{len(self.reduce)}; both must have the same number of nodes"
            )
        for field in _EDGE_FIELDS:
            for k, (op, idx) in enumerate(getattr(self, field)):
                if op not in valid:
                    _check_pair(op, names, namespace, source, f"'{field}' edge {k}")
                node = 2 + k // 2
                if not 0 <= idx < node:
                    raise GenotypeError(
                        f"{source}: '{field}' edge {k} ({op!r}, {idx}) feeds node {node} "
                        f"but takes input {idx}; node {node} can only take inputs "
                        f"0..{node - 1}"
                    )
        last = self.steps + 1
        for field in _CONCAT_FIELDS:
            concat = getattr(self, field)
            for c in concat:
                if not 0 <= c <= last:
                    raise GenotypeError(
                        f"{source}: '{field}' index {c} is outside the cell's nodes 0..{last}"
                    )
            if len(set(concat)) != len(concat):
                raise GenotypeError(f"{source}: '{field}' lists a node twice: {list(concat)}")

    # ------------------------------------------------------------------ literal form
    def __str__(self) -> str:
        """The DARTS literal, as published; `parse_darts_literal(str(g)) == g`."""

        def edges(es: tuple[Edge, ...]) -> str:
            return "[" + ", ".join(f"({op!r}, {idx})" for op, idx in es) + "]"

        return (
            f"Genotype(normal={edges(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={edges(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )


def _check_pair(op: str, names: list[str], namespace: str, source: str, where: str) -> None:
    """Pass when `op` (not in `names`) is a valid pair ``base/act`` of a base in `names`;
    else one UnknownOperationError line naming the problem. Imported here, not at the
    top, so that reading genotypes does not load torch."""
    from search_spaces.activations import PAIR_SEPARATOR
    from search_spaces.op_spec import check_op_names

    if PAIR_SEPARATOR not in op:
        raise UnknownOperationError(
            f"{source}: unknown operation {op!r} in {where}; valid: {_brief(names)}"
        )
    try:
        check_op_names([op], names, namespace)
    except UnknownOperationError as exc:
        raise UnknownOperationError(f"{source}: {where} ({op!r}): {exc}") from None


def _brief(names: list[str], limit: int = 12) -> str:
    """A short list of names for one-line error messages."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"


# ---------------------------------------------------------------------- literal parser
def _where(node: ast.AST) -> str:
    line = getattr(node, "lineno", None)
    col = getattr(node, "col_offset", None)
    return f" (line {line}, col {col + 1})" if line is not None and col is not None else ""


def _describe(node: ast.AST) -> str:
    """Name an unexpected syntax node in words, without evaluating anything."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return f"a call to {func.id}()"
        if isinstance(func, ast.Attribute):
            return f"a call to .{func.attr}()"
        return "a call"
    if isinstance(node, ast.Constant):
        return f"the constant {node.value!r}"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    return f"an expression of type {type(node).__name__}"


def _int_literal(node: ast.AST, what: str, source: str) -> int:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    ):
        return node.value
    raise GenotypeError(
        f"{source}: {what} must be a non-negative integer literal, got {_describe(node)}"
        f"{_where(node)}"
    )


def _edges_from_ast(field: str, node: ast.AST, source: str) -> list[Edge]:
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise GenotypeError(
            f"{source}: '{field}' must be a list of (op_name, input_index) pairs, got "
            f"{_describe(node)}{_where(node)}"
        )
    out: list[Edge] = []
    for k, elt in enumerate(node.elts):
        if not isinstance(elt, (ast.Tuple, ast.List)) or len(elt.elts) != 2:
            raise GenotypeError(
                f"{source}: '{field}' edge {k} must be a pair (op_name, input_index), got "
                f"{_describe(elt)}{_where(elt)}"
            )
        op_node, idx_node = elt.elts
        if not (isinstance(op_node, ast.Constant) and isinstance(op_node.value, str)):
            raise GenotypeError(
                f"{source}: '{field}' edge {k}: op name must be a string literal, got "
                f"{_describe(op_node)}{_where(op_node)}"
            )
        idx = _int_literal(idx_node, f"'{field}' edge {k} input index", source)
        out.append((op_node.value, idx))
    return out


def _concat_from_ast(field: str, node: ast.AST, source: str) -> list[int]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_int_literal(e, f"'{field}' entry", source) for e in node.elts]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
        and 1 <= len(node.args) <= 3
    ):
        args = [_int_literal(a, f"'{field}' range() argument", source) for a in node.args]
        if len(args) == 3 and args[2] == 0:
            raise GenotypeError(f"{source}: '{field}' range() step must not be 0{_where(node)}")
        return list(range(*args))
    raise GenotypeError(
        f"{source}: '{field}' must be a list, tuple or range(...) of node indices, got "
        f"{_describe(node)}{_where(node)}"
    )


def parse_darts_literal(text: str, *, source: str = "genotype literal") -> Genotype:
    """Parse a published DARTS genotype literal without executing it.

    Accepts ``Genotype(normal=[...], normal_concat=range(2, 6), reduce=[...],
    reduce_concat=[2, 3, 4, 5])`` with keyword or positional arguments, optionally as
    ``NAME = Genotype(...)`` (as in DARTS's ``genotypes.py``) or ``genotypes.Genotype(...)``.
    Only literals (strings, ints, lists, tuples) and ``range(...)`` with integer arguments
    are understood; anything else, including any other call, is refused, because the text
    may come from an untrusted file. The tree is walked with `ast`; nothing is evaluated.
    """
    if not isinstance(text, str):
        raise GenotypeError(f"{source}: expected text, got {type(text).__name__}")
    try:
        module = ast.parse(text.strip(), mode="exec")
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise GenotypeError(
            f"{source}: not a valid genotype literal: {exc.msg}{where}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise GenotypeError(f"{source}: not a valid genotype literal: {exc}") from None

    if len(module.body) != 1:
        raise GenotypeError(
            f"{source}: expected exactly one Genotype(...) expression, found "
            f"{len(module.body)} statements"
        )
    stmt = module.body[0]
    if isinstance(stmt, ast.Expr):
        call = stmt.value
    elif (
        isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
    ):
        call = stmt.value
    else:
        raise GenotypeError(
            f"{source}: expected 'Genotype(...)' or 'NAME = Genotype(...)', got a statement "
            f"of type {type(stmt).__name__}{_where(stmt)}"
        )
    func = call.func if isinstance(call, ast.Call) else None
    if not (
        (isinstance(func, ast.Name) and func.id == "Genotype")
        or (isinstance(func, ast.Attribute) and func.attr == "Genotype")
    ):
        raise GenotypeError(
            f"{source}: expected a call to Genotype(...), got {_describe(call)}{_where(call)}"
        )
    assert isinstance(call, ast.Call)

    fields: dict[str, ast.AST] = {}
    if len(call.args) > len(FIELDS):
        raise GenotypeError(
            f"{source}: Genotype(...) takes at most {len(FIELDS)} arguments, got "
            f"{len(call.args)}"
        )
    for name, arg in zip(FIELDS, call.args, strict=False):  # fewer args: keywords follow
        if isinstance(arg, ast.Starred):
            raise GenotypeError(f"{source}: *arguments are not allowed{_where(arg)}")
        fields[name] = arg
    for kw in call.keywords:
        if kw.arg is None:
            raise GenotypeError(f"{source}: **arguments are not allowed{_where(kw.value)}")
        if kw.arg not in FIELDS:
            raise GenotypeError(
                f"{source}: unknown Genotype field {kw.arg!r}; expected {', '.join(FIELDS)}"
            )
        if kw.arg in fields:
            raise GenotypeError(f"{source}: Genotype field {kw.arg!r} given twice")
        fields[kw.arg] = kw.value
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise GenotypeError(f"{source}: Genotype(...) is missing {', '.join(missing)}")

    normal = _edges_from_ast("normal", fields["normal"], source)
    reduce = _edges_from_ast("reduce", fields["reduce"], source)
    normal_concat = _concat_from_ast("normal_concat", fields["normal_concat"], source)
    reduce_concat = _concat_from_ast("reduce_concat", fields["reduce_concat"], source)
    return Genotype(
        normal=_check_edges("normal", normal, source),
        normal_concat=_check_concat("normal_concat", normal_concat, source),
        reduce=_check_edges("reduce", reduce, source),
        reduce_concat=_check_concat("reduce_concat", reduce_concat, source),
    )


# ---------------------------------------------------------------------- files
def save_genotype(genotype: Genotype, path: str | os.PathLike[str]) -> Path:
    """Write `genotype` as JSON (indent 2), atomically.

    The text goes to a temporary file in the same directory, is flushed to disk and then
    renamed over `path`, so a crash or a full disk never leaves a half-written genotype
    (and never destroys a previous good one). Missing parent directories are created.
    Returns the path written.
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"save_genotype expects a Genotype, got {type(genotype).__name__}")
    target = Path(path)
    text = json.dumps(genotype.to_dict(), indent=2) + "\n"
    try:
        atomic_write_bytes(target, text.encode("utf-8"))
    except OSError as exc:
        raise GenotypeError(
            f"cannot write genotype to '{target}': {exc.strerror or exc}"
        ) from None
    return target


def load_genotype(path: str | os.PathLike[str]) -> Genotype:
    """Read a genotype file: JSON (as written by `save_genotype`) or a DARTS literal.

    JSON may be the genotype object itself or an object with a top-level ``"genotype"``
    key holding it (a run summary); that value may also be a literal string. Any other
    text is parsed as a DARTS literal. Every failure is a `GenotypeError` naming the path.
    """
    p = Path(path)
    src = f"'{p}'"
    if not p.exists():
        raise GenotypeError(f"genotype file {src} does not exist")
    if p.is_dir():
        raise GenotypeError(f"genotype file {src} is a directory, not a file")
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise GenotypeError(
                f"genotype file {src} is {size} bytes; too large to be a genotype"
            )
        raw = p.read_bytes()
    except OSError as exc:
        raise GenotypeError(f"cannot read genotype file {src}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GenotypeError(f"genotype file {src} is not UTF-8 text") from None
    if not text.strip():
        raise GenotypeError(f"genotype file {src} is empty")

    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        # Not JSON: it may still be a pasted DARTS literal, whatever the file is called.
        try:
            return parse_darts_literal(text, source=src)
        except GenotypeError:
            looks_json = p.suffix.lower() == ".json" or text.lstrip().startswith(("{", "["))
            if not looks_json:
                raise
        detail = (
            f"{exc.msg} (line {exc.lineno}, col {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else "nested too deeply"
        )
        raise GenotypeError(f"{src}: malformed JSON: {detail}") from None

    if isinstance(data, Mapping) and "genotype" in data and "normal" not in data:
        data = data["genotype"]
        if isinstance(data, str):
            return parse_darts_literal(data, source=src)
    return Genotype.from_dict(data, source=src)

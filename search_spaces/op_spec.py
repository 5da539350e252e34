"""One `OpSpec` per candidate operation: everything the product knows about it.

An operation used to be described in half a dozen places (discrete builder, batched
supernet form, zero / pooling sets, heavy sets, MAC counters, simulator kinds, report
colours), and a new op that missed one of them failed late or silently. A spec holds it
all, and registering it is the one step a new operation needs:

    register_op_spec(OpSpec(
        "adder_conv_3x3",
        build=lambda C, stride, affine: AdderBlock(C, stride, affine),
        batched=None,                     # supernet: one module per edge (`PerEdge`)
        family="conv", heavy=True,
        layers={AdderConv2d: LayerSpec(count=..., additions=..., kind="adder")},
    ))

Names are namespaced because spaces reuse published names with other meanings:
NAS-Bench-201's `avg_pool_3x3` is DARTS's module, but its supernet form has no BN after
the pooling. A spec's `namespace` is "" for the shared (DARTS) ops; `op_spec(name, ns)`
looks in `ns` first and then in the shared namespace, so a space only registers what
differs. The DARTS primitives are registered in `darts_ops.py`, NB201's ops in
`nb201.py`; importing the package registers the DARTS ones.

An op that can run with another activation (`build_activated`) is also named as a pair,
``sep_conv_3x3/silu``: looking a pair up gives a spec derived from the base op's, so
every user of specs (networks, supernet fallback, counters, reports) takes pairs as
they are. `op_names` / `visible_op_names` list the plain names only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from search_spaces.activations import PAIR_SEPARATOR, activation, split_pair
from search_spaces.errors import UnknownOperationError
from search_spaces.layer_spec import LAYER_SPECS, LayerSpec, register_layer

if TYPE_CHECKING:
    from search_spaces.supernet_ops import EdgeBatchOp

#: (C, stride, affine) -> a module mapping C channels to C channels (stride 2 subsamples).
OpBuilder = Callable[[int, int, bool], nn.Module]
#: (C, stride, n edges) -> the op computed for n edges leaving one node of a supernet.
BatchedBuilder = Callable[[int, int, int], "EdgeBatchOp"]
#: (C, stride, affine, activation name) -> the module with that activation inside it.
ActivatedBuilder = Callable[[int, int, bool, str], nn.Module]
#: (C, stride, n edges, activation name) -> the supernet form with that activation.
ActivatedBatchedBuilder = Callable[[int, int, int, str], "EdgeBatchOp"]

#: The report colour groups every space uses; a spec may name a new one.
FAMILIES = ("conv", "pool", "skip", "none", "other")

#: The namespace of the shared ops (DARTS's), where every lookup ends.
SHARED = ""


@dataclass(frozen=True)
class OpSpec:
    """A candidate operation.

    - `build`: the discrete module (retraining, deployment, per-edge supernet fallback).
    - `batched`: the supernet form for many edges at once; None runs one `build` module
      per edge (`supernet_ops.PerEdge`), which is always correct, only slower.
    - `family`: the report's colour group; left empty, it is read from the name
      (`family_from_name`).
    - `heavy`: carries most of a cell's parameters and compute; profiling strata vary the
      share of heavy ops so that samples span the latency range.
    - `zero`: contributes exactly zero; the supernet never computes it (its architecture
      weight still takes part in the softmax).
    - `supernet_bn`: the per-edge supernet form appends an affine-free BatchNorm, as the
      DARTS search network does after pooling (which has no BN of its own).
    - `layers`: specs of the module types the op introduces; registered with the op, so
      counters and the simulator know them.
    - `namespace`: "" for shared ops; a space's name where it gives a shared name its
      own meaning.
    - `build_activated` / `batched_activated`: `build` / `batched` with an activation
      (its registered name, `activations.py`) used everywhere inside the op. An op with
      `build_activated` can be named as a pair, ``op/act`` (`find_op_spec`); none,
      skip and pooling have neither.
    """

    name: str
    build: OpBuilder
    batched: BatchedBuilder | None = None
    family: str = ""
    heavy: bool = False
    zero: bool = False
    supernet_bn: bool = False
    layers: Mapping[type[nn.Module], LayerSpec] = field(default_factory=dict, hash=False)
    namespace: str = SHARED
    build_activated: ActivatedBuilder | None = None
    batched_activated: ActivatedBatchedBuilder | None = None

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", family_from_name(self.name))

    @property
    def takes_activation(self) -> bool:
        """Whether the op can be built with another activation (named ``op/act``)."""
        return self.build_activated is not None


def family_from_name(name: str) -> str:
    """The colour group a name suggests (conv / pool / skip / none / other); what
    reports fall back to for names without a spec, e.g. read from an old file."""
    lowered = name.lower()
    if "conv" in lowered:
        return "conv"
    if "pool" in lowered:
        return "pool"
    if "skip" in lowered or lowered in ("identity", "id"):
        return "skip"
    if lowered in ("none", "zero"):
        return "none"
    return "other"


#: namespace -> name -> spec, in registration order.
_SPECS: dict[str, dict[str, OpSpec]] = {SHARED: {}}
#: (namespace looked up in, pair name) -> the derived spec (`_resolve_pair`), so a pair
#: is one spec object for as long as its base is registered unchanged.
_PAIRS: dict[tuple[str, str], OpSpec] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    """Register the DARTS primitives (`darts_ops`) before the registry is first used, so
    they come first in every listing and a user's registration cannot take their names;
    lazily, so that importing `search_spaces` (its errors, say) does not load torch."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True  # before the import: darts_ops registers through here
        import search_spaces.darts_ops  # noqa: F401


def register_op_spec(spec: OpSpec) -> OpSpec:
    """Register `spec` (and its layer specs); a (namespace, name) pair is registered once.

    A layer type that already has a different spec is refused rather than replaced, so
    one op family cannot silently change how another's layers are counted.
    """
    _load_builtins()
    table = _SPECS.setdefault(spec.namespace, {})
    if spec.name in table:
        where = f" in namespace {spec.namespace!r}" if spec.namespace else ""
        raise ValueError(f"operation {spec.name!r} is already registered{where}")
    _register_layers(spec)
    table[spec.name] = spec
    _PAIRS.clear()  # a pair's base may now resolve differently in some namespace
    return spec


def _register_layers(spec: OpSpec) -> None:
    """All of the spec's layer types, or none of them when one clashes."""
    for module_type, layer in spec.layers.items():
        old = LAYER_SPECS.get(module_type)
        if old is not None and old != layer:
            raise ValueError(f"operation {spec.name!r}: layer type {module_type.__name__} "
                             "already has a different LayerSpec")
    for module_type, layer in spec.layers.items():
        register_layer(layer, module_type)


def replace_op_spec(spec: OpSpec) -> OpSpec:
    """Swap the registered spec of (spec.namespace, spec.name) for `spec`; backs the
    helpers that add one fact to an op registered earlier (`register_batched_op`)."""
    _load_builtins()
    table = _SPECS.get(spec.namespace, {})
    if spec.name not in table:
        raise UnknownOperationError(f"unknown operation {spec.name!r}; register it first")
    _register_layers(spec)
    table[spec.name] = spec
    _PAIRS.clear()  # pairs derived from the old spec are stale
    return spec


def find_op_spec(name: str, namespace: str = SHARED) -> OpSpec | None:
    """The spec `name` means in `namespace` (its own, else the shared one), or None.

    A pair ``op/act`` (`activations.split_pair`) means `op` built with activation `act`:
    a spec of its own, named as given, derived from op's (`_resolve_pair`); None when
    op is unknown, takes no activation, or act is not registered.
    """
    _load_builtins()
    spec = _plain_spec(name, namespace)
    if spec is None and PAIR_SEPARATOR in name:
        found = _resolve_pair(name, namespace)
        spec = found if isinstance(found, OpSpec) else None
    return spec


def op_spec(name: str, namespace: str = SHARED) -> OpSpec:
    """Like `find_op_spec`, but an unknown name is a one-line UnknownOperationError (for a
    pair: the one that names what is wrong with it)."""
    _load_builtins()
    spec = _plain_spec(name, namespace)
    if spec is not None:
        return spec
    if PAIR_SEPARATOR in name:
        found = _resolve_pair(name, namespace)
        if isinstance(found, OpSpec):
            return found
        raise found
    raise _unknown(name, visible_op_names(namespace))


def _plain_spec(name: str, namespace: str) -> OpSpec | None:
    spec = _SPECS.get(namespace, {}).get(name)
    if spec is None and namespace != SHARED:
        spec = _SPECS[SHARED].get(name)
    return spec


def _resolve_pair(name: str, namespace: str, among: Sequence[str] | None = None
                  ) -> OpSpec | UnknownOperationError:
    """The derived spec of the pair `name` in `namespace`, or the one-line error saying
    what is wrong with it; `among` limits the names an error lists (default: every name
    visible in `namespace`).

    The derived spec is the base's, renamed, with `build` / `batched` bound to the
    activation; its own `build_activated` / `batched_activated` are None, since its
    activation is chosen already.
    """
    _load_builtins()
    cached = _PAIRS.get((namespace, name))
    if cached is not None:
        return cached
    try:
        base_name, act = split_pair(name)
    except UnknownOperationError as exc:
        return exc
    visible = visible_op_names(namespace) if among is None else list(among)
    base = _plain_spec(base_name, namespace)
    if base is None or act is None:
        return _unknown(base_name, visible, pair=name)
    build_activated, batched_activated = base.build_activated, base.batched_activated
    if build_activated is None:
        return UnknownOperationError(
            f"operation {base_name!r} carries no activation choice; pairs are only for: "
            f"{', '.join(activated_op_names(namespace, visible)) or '(no operation)'}"
        )
    try:
        activation(act)
    except UnknownOperationError as exc:
        return UnknownOperationError(f"{exc} (in operation {name!r})")
    chosen: str = act

    def build(C: int, stride: int, affine: bool) -> nn.Module:
        return build_activated(C, stride, affine, chosen)

    batched: BatchedBuilder | None = None
    if batched_activated is not None:
        def batched(C: int, stride: int, n: int) -> EdgeBatchOp:
            return batched_activated(C, stride, n, chosen)

    spec = dataclasses.replace(base, name=name, build=build, batched=batched,
                               build_activated=None, batched_activated=None)
    _PAIRS[(namespace, name)] = spec
    return spec


def activated_op_names(namespace: str = SHARED, among: Sequence[str] | None = None
                       ) -> list[str]:
    """The names (of `among`, default every visible name) that take an activation, i.e.
    may be named as a pair ``op/act``."""
    names = visible_op_names(namespace) if among is None else list(among)
    out = []
    for n in names:
        spec = _plain_spec(n, namespace)
        if spec is not None and spec.takes_activation:
            out.append(n)
    return out


def op_names(namespace: str = SHARED) -> list[str]:
    """Names registered in `namespace` itself (not those it inherits from the shared
    namespace), in registration order; the default lists the shared operations."""
    _load_builtins()
    return list(_SPECS.get(namespace, {}))


def visible_op_names(namespace: str = SHARED) -> list[str]:
    """Every name `op_spec` resolves in `namespace`: the shared ones, then its own."""
    _load_builtins()
    names = list(_SPECS[SHARED])
    names.extend(n for n in _SPECS.get(namespace, {}) if n not in names)
    return names


def check_op_names(
    names: Sequence[str], allowed: Sequence[str] | None = None, namespace: str = SHARED
) -> None:
    """Raise UnknownOperationError for the first name not in `allowed` (default: every
    name visible in `namespace`); one line, listing the valid names. A pair ``op/act``
    passes when op does and the pair resolves (`find_op_spec`)."""
    valid = visible_op_names(namespace) if allowed is None else list(allowed)
    for name in names:
        if name in valid:
            continue
        if PAIR_SEPARATOR in name:
            found = _resolve_pair(name, namespace, valid)
            if isinstance(found, UnknownOperationError):
                raise found
            base, _ = split_pair(name)
            if base in valid:
                continue
            raise _unknown(base, valid, pair=name)
        raise _unknown(name, valid)


def _unknown(name: str, valid: Sequence[str], pair: str | None = None
             ) -> UnknownOperationError:
    where = f" in {pair!r}" if pair is not None else ""
    return UnknownOperationError(
        f"unknown operation {name!r}{where}; known operations: {', '.join(valid)}"
    )


__all__ = [
    "FAMILIES",
    "SHARED",
    "ActivatedBatchedBuilder",
    "ActivatedBuilder",
    "BatchedBuilder",
    "OpBuilder",
    "OpSpec",
    "activated_op_names",
    "check_op_names",
    "family_from_name",
    "find_op_spec",
    "op_names",
    "op_spec",
    "register_op_spec",
    "replace_op_spec",
    "visible_op_names",
]

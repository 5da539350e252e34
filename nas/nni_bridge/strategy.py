"""The hook into NNI's DARTS strategy: our latency term in its architecture loss.

NNI 3.0's `nni.nas.strategy.DARTS(penalty=...)` already has a place for a penalty: its
`DartsLightningModule.training_step` computes the architecture loss on the validation
batch, then ``loss, details = penalty(loss, self.export_probs())`` and backpropagates
``loss`` into the alphas (and logs ``penalty/<key>`` for each detail). The penalty it
accepts must be an `ExpectationProfilerPenalty`; NNI's own one computes an expectation
over `export_probs()`, which are Python floats (`softmax(alpha).cpu().tolist()`), so its
value is a constant that adds nothing to the alphas' gradient. That is the gap users hit.

`PredictorPenalty` below is an `ExpectationProfilerPenalty` subclass (so NNI takes it
unchanged) that ignores those detached probabilities and reads the live alphas of the
supernet instead, returning ``loss + LatencyPenalty(alphas)``. It needs to know the
supernet: `latency_darts` returns NNI's `DARTS` strategy (or a subclass you name) whose one
change is to hand the penalty the one-shot module it creates; or build `DARTS(penalty=
nni_penalty(penalty, model_space))` yourself, with the model space you give NNI (its DARTS
strategy mutates that object in place). Everything NNI is imported inside functions.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from nas.nni_bridge._nni import require_nni
from nas.nni_bridge.penalty import LatencyPenalty
from search_spaces.errors import InputError


@cache
def _penalty_class() -> Any:
    require_nni()
    from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty

    class PredictorPenalty(ExpectationProfilerPenalty):
        """Our latency predictor as NNI's DARTS penalty (differentiable in the alphas)."""

        def __init__(self, penalty: LatencyPenalty, source: Any = None) -> None:
            baseline = penalty.target_ms or penalty.model.reference_ms
            super().__init__(profiler=None, baseline=baseline, scale=penalty.weight)
            # a tuple, so nn.Module does not adopt the supernet (or its parent) as a child
            self._bridge: tuple[LatencyPenalty, Any] = (penalty, source)

        @property
        def latency(self) -> LatencyPenalty:
            return self._bridge[0]

        @property
        def source(self) -> Any:
            return self._bridge[1]

        def bind(self, source: Any) -> None:
            self._bridge = (self._bridge[0], source)

        def forward(self, loss: Any, sample: Any) -> tuple[Any, dict[str, float]]:
            # `sample` (NNI's export_probs) is detached floats: not used
            if self.source is None:
                raise InputError("the latency penalty is not bound to an NNI supernet: use "
                                 "latency_darts(...) or nni_penalty(penalty, model_space)")
            term, ms = self.latency.evaluate(self.source)
            return loss + term, {"loss_original": float(loss.detach()),
                                 "latency_ms": ms, "latency_loss": float(term.detach())}

    return PredictorPenalty


def nni_penalty(penalty: LatencyPenalty, source: Any = None) -> Any:
    """`penalty` as an NNI `ExpectationProfilerPenalty`, for `DARTS(penalty=...)`.

    `source` is what it reads the alphas from at each architecture step: the model space
    given to NNI (mutated in place by the strategy), or the one-shot module; None leaves
    it to `latency_darts`, which binds it."""
    return _penalty_class()(penalty, source)


@cache
def _strategy_class(base: type) -> type:
    class LatencyAware(base):
        """NNI's strategy, handing the latency penalty the one-shot module it trains."""

        def configure_oneshot_module(self, training_module: Any) -> Any:
            module = super().configure_oneshot_module(training_module)
            penalty: Any = self.penalty
            if isinstance(penalty, _penalty_class()) and penalty.source is None:
                penalty.bind(module)
            return module

    LatencyAware.__name__ = LatencyAware.__qualname__ = f"LatencyAware{base.__name__}"
    return LatencyAware


def latency_darts(*, hardware: str | None = None, weight: float = 1.0,
                  target_ms: float | None = None, predictor: str | Path | None = None,
                  penalty: LatencyPenalty | None = None, strategy_cls: type | None = None,
                  **strategy_kwargs: Any) -> Any:
    """NNI's DARTS strategy with our latency term in its architecture loss.

    Either `hardware` (its shipped or profiled DARTS predictor, like `nas search
    --hardware`) with `weight` and optionally `target_ms`, or a ready `penalty`. Other
    keywords go to the strategy (`arc_learning_rate`, `gradient_clip_val`,
    `warmup_epochs`, ...). `strategy_cls`: `nni.nas.strategy.DARTS` (default) or a
    subclass of it that builds a `DartsLightningModule` with the `penalty` argument
    (e.g. `GumbelDARTS`; only DARTS is tested here)."""
    require_nni()
    from nni.nas.strategy import DARTS

    if "penalty" in strategy_kwargs:
        raise InputError("pass our penalty as penalty=LatencyPenalty(...), not NNI's")
    if penalty is None:
        if not hardware:
            raise InputError("latency_darts needs --hardware (or a LatencyPenalty)")
        penalty = LatencyPenalty.for_hardware(hardware, weight, target_ms, predictor)
    base = DARTS if strategy_cls is None else strategy_cls
    if not (isinstance(base, type) and issubclass(base, DARTS)):
        raise InputError(f"strategy_cls must be nni.nas.strategy.DARTS or a subclass, got {base}")
    return _strategy_class(base)(penalty=nni_penalty(penalty), **strategy_kwargs)


__all__ = ["latency_darts", "nni_penalty"]

"""Validate a profile end to end: the shapes of the small Llama-style model and the simulator's prediction.

:mod:`calibration.e2e` builds and times the model (training step, prefill, decode); this module says what
the model is (:class:`Shape`, derived from a run config's model spec) and what the simulator predicts for
the same shapes on a profile, with the ``pytorch-eager`` stack when that preset exists (it describes the
same plain-PyTorch code), else the default stack.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile

#: The stack whose kernels the e2e model launches; looked up at run time (it may not exist yet).
E2E_STACK = "pytorch-eager"


@dataclass(frozen=True)
class Shape:
    """Sizes of the validation transformer and of the batches it is timed on (tokens)."""

    layers: int = 4
    hidden: int = 2048
    heads: int = 16
    kv_heads: int = 4
    ffn: int = 5632
    vocab: int = 32000
    batch: int = 4
    seq: int = 1024
    decode_batch: int = 16
    decode_context: int = 1024
    head_dim: int | None = None
    name: str = "validation-transformer"

    @classmethod
    def tiny(cls) -> Shape:
        """A very small shape that runs in moments on a CPU (tests)."""
        return cls(
            layers=2,
            hidden=64,
            heads=4,
            kv_heads=2,
            ffn=128,
            vocab=256,
            batch=1,
            seq=32,
            decode_batch=2,
            decode_context=32,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shape:
        """A shape from :meth:`as_dict` output (a raw file's record)."""
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})

    @classmethod
    def for_model(cls, spec: Any, device: str, layers: int = 2) -> Shape:
        """The e2e shape of a dense Llama-style model spec: its widths with ``layers`` layers on a GPU; on the
        CPU a tiny model with the same GQA ratio (``--device cpu`` smoke-tests the path, it measures nothing)."""
        if spec.moe is not None or spec.mla is not None or spec.mlp != "swiglu" or spec.norm != "rmsnorm":
            raise ClusterSimError(
                f"the e2e step builds dense Llama-style models (swiglu, rmsnorm, no MoE/MLA); {spec.name} is not one"
            )
        if device == "cpu":
            group = max(1, spec.num_attention_heads // spec.kv_heads)
            return dataclasses.replace(cls.tiny(), heads=4, kv_heads=max(1, 4 // min(group, 4)), name=spec.name)
        return cls(
            layers=min(layers, spec.num_layers),
            hidden=spec.hidden_size,
            heads=spec.num_attention_heads,
            kv_heads=spec.kv_heads,
            ffn=spec.ffn_hidden_size,
            vocab=spec.vocab_size,
            batch=1,
            seq=min(2048, spec.max_seq_len),
            head_dim=spec.head_dim,
            name=spec.name,
        )

    @property
    def head_size(self) -> int:
        """Per-head width: ``head_dim`` when set, else hidden / heads."""
        return self.head_dim or self.hidden // self.heads

    def with_layers(self, layers: int) -> Shape:
        """This shape with ``layers`` layers."""
        return dataclasses.replace(self, layers=layers)

    def as_dict(self) -> dict[str, Any]:
        """The shape's fields (the raw file's key for its records)."""
        return dataclasses.asdict(self)

    def spec(self) -> dict[str, Any]:
        """The shape as a clustersim model spec, so the simulator predicts the same model."""
        spec: dict[str, Any] = {
            "name": f"{self.name}-e2e",
            "source": "calibration.e2e (random weights)",
            "num_layers": self.layers,
            "hidden_size": self.hidden,
            "num_attention_heads": self.heads,
            "num_kv_heads": self.kv_heads,
            "ffn_hidden_size": self.ffn,
            "vocab_size": self.vocab,
            "mlp": "swiglu",
            "norm": "rmsnorm",
            "position": "rope",
            "max_seq_len": max(self.seq, self.decode_context),
        }
        if self.head_dim:
            spec["head_dim"] = self.head_dim
        return spec


def e2e_stack() -> str:
    """``pytorch-eager`` when that stack preset exists, else the default stack."""
    from simulator.stacks import DEFAULT_STACK, get_stack

    try:
        get_stack(E2E_STACK)
    except ClusterSimError:
        return DEFAULT_STACK
    return E2E_STACK


def _serving_time(s: Shape, profile: Profile, stack: str, prefill: list[int], decode: list[int], eager: bool) -> float:
    """One iteration of a plain PyTorch loop: the serving model without an engine's per-iteration CPU time."""
    from simulator.serving.iteration import predict_iteration_time

    prof = profile.model_copy(update={"iteration_overhead_s": 0.0})
    kw: dict[str, Any] = {"launch_overhead": eager, "profile": prof}
    if "stack" in inspect.signature(predict_iteration_time).parameters:
        kw["stack"] = stack
    return predict_iteration_time(s.spec(), profile.gpu, 1, prefill, decode, **kw)


def predict(s: Shape, profile: Profile, stack: str | None = None) -> dict[str, float]:
    """The simulator's prediction (seconds) of each e2e record kind on ``profile`` (one GPU, no parallelism)."""
    from simulator.core.config import load_config
    from simulator.training import simulate_training

    stack = stack or e2e_stack()
    cfg = {
        "model": s.spec(),
        "cluster": {"gpu": profile.gpu, "num_gpus": 1},
        "training": {"seq_len": s.seq, "global_batch": s.batch, "micro_batch": s.batch, "recompute": "none"},
        "stack": stack,
    }
    train = simulate_training(load_config(cfg), profile).step_time_s
    decode = [s.decode_context] * s.decode_batch
    return {
        "train_step": train,
        "prefill": _serving_time(s, profile, stack, [s.seq] * s.batch, [], True),
        "decode_eager": _serving_time(s, profile, stack, [], decode, True),
        "decode_graph": _serving_time(s, profile, stack, [], decode, False),
    }


def compare(records: list[dict[str, Any]], profile: Profile) -> list[tuple[str, float, float, str]]:
    """(label, measured s, predicted s, stack) for every e2e record of a raw file, predicted on ``profile``."""
    stack = e2e_stack()
    out = []
    cache: dict[str, dict[str, float]] = {}
    for r in records:
        s = Shape.from_dict(r["shape"])
        key = repr(r["shape"])
        if key not in cache:
            cache[key] = predict(s, profile, stack)
        label = f"{r['kind']} ({s.name}, {s.layers} layers)"
        out.append((label, r["ms"] / 1e3, cache[key][r["kind"]], stack))
    return out

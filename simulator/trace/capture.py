"""Trace a PyTorch model's training step on the meta device: no weights, no GPU.

The model is built under ``torch.device("meta")`` and run forward -> loss -> backward (-> optimizer step)
under two modes: a function mode (:mod:`simulator.trace.functions`: CUDA autocast, fused kernels, region
tags for backward) and a dispatch mode (:mod:`simulator.trace.recorder`: one record per ATen kernel).
The transformer layers are found as the largest ``nn.ModuleList`` of same-class children; forward hooks
on them set the region of forward kernels, the autograd-node tags the region of backward ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.trace.autocast import AUTOCAST_DTYPES, AutocastCaster
from simulator.trace.functions import FunctionHandler
from simulator.trace.fused import DEFAULT_FUSED, FUSABLE
from simulator.trace.kernels import foreach_launches
from simulator.trace.recorder import Recorder, mode_classes
from simulator.trace.schema import Kernel, ParamCounts, Trace


def trace_model(
    factory_or_module: Callable[[], Any] | Any,
    *,
    batch: int,
    seq: int,
    autocast: str | None = "bf16",
    fused: tuple[str, ...] | list[str] = DEFAULT_FUSED,
    optimizer: bool = True,
    vocab: int | None = None,
    name: str | None = None,
) -> Trace:
    """Record the kernels of one training step of a model on ``batch`` x ``seq`` tokens.

    ``factory_or_module`` is a zero-argument callable building an ``nn.Module`` (called under
    ``torch.device("meta")``) or a module already on the meta device. ``autocast`` is ``"bf16"``,
    ``"fp16"`` or None (fp32); ``fused`` names the calls captured as one kernel each (see
    :mod:`simulator.trace.fused`); ``optimizer`` adds an ``AdamW(foreach=True)`` step.
    """
    import torch

    _check_args(batch, seq, autocast, fused)
    model = _build(factory_or_module)
    layers, layer_class = find_layers(model)
    vocab = vocab or _vocab(model)
    rec = Recorder()
    caster = AutocastCaster(torch.bfloat16 if autocast == "bf16" else torch.float16) if autocast else None
    handler = FunctionHandler(rec, caster, frozenset(fused))
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        with _hooks(model, layers, rec):
            _run_step(model, rec, handler, autocast, batch, seq, vocab)
    except ClusterSimError:
        raise
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AttributeError, IndexError) as exc:
        raise ClusterSimError(f"tracing failed on the meta device: {type(exc).__name__}: {_first_line(exc)}") from None
    optimizer_name = _optimizer_step(params, rec) if optimizer else None
    return _assemble(
        rec,
        model,
        layers,
        name=name or _describe(factory_or_module),
        layer_class=layer_class,
        batch=batch,
        seq=seq,
        autocast=autocast,
        fused=fused,
        optimizer=optimizer_name,
    )


def _check_args(batch: int, seq: int, autocast: str | None, fused: tuple[str, ...] | list[str]) -> None:
    if batch < 1 or seq < 1:
        raise ClusterSimError(f"batch={batch} and seq={seq} must be >= 1")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ClusterSimError(f"autocast={autocast!r}; use one of {', '.join(AUTOCAST_DTYPES)} or none")
    unknown = sorted(set(fused) - set(FUSABLE))
    if unknown:
        raise ClusterSimError(f"fused: unknown {', '.join(unknown)}; choose from {', '.join(FUSABLE)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _describe(obj: Any) -> str:
    if hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
        return f"{obj.__module__}:{obj.__qualname__}"
    return type(obj).__name__


def _build(factory_or_module: Any) -> Any:
    """The model on the meta device, from a factory (called under ``torch.device('meta')``) or a module."""
    import torch

    if isinstance(factory_or_module, torch.nn.Module):
        model = factory_or_module
    else:
        try:
            with torch.device("meta"):
                model = factory_or_module()
        except ClusterSimError:
            raise
        except Exception as exc:  # the user's factory: any failure is theirs to fix, in one line
            raise ClusterSimError(f"the model factory failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ClusterSimError(f"the factory returned {type(model).__name__}, not a torch.nn.Module")
    if any(t.device.type != "meta" for t in [*model.parameters(), *model.buffers()]):
        raise ClusterSimError("the model has tensors off the meta device; build it in a factory instead")
    model.train()
    return model


def find_layers(model: Any) -> tuple[list[Any], str | None]:
    """The transformer layers: the largest ``nn.ModuleList`` whose children are all of one class."""
    import torch

    best: list[Any] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            kids = list(module)
            if kids and len({type(k) for k in kids}) == 1:
                best = kids
    return best, (type(best[0]).__name__ if best else None)


def _vocab(model: Any) -> int:
    import torch

    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(size, int) and size > 0:
        return size
    tables = [m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    if not tables:
        raise ClusterSimError("cannot tell the vocabulary size (no config.vocab_size, no nn.Embedding); pass vocab=")
    return max(tables)


@contextmanager
def _hooks(model: Any, layers: list[Any], rec: Recorder) -> Iterator[None]:
    """Forward hooks: the current module's name, and the region (pre -> layer i -> post) of each call.

    The region only moves forward: a layer's exit starts ``post``, whatever module encloses the layers.
    """
    index = {id(layer): i for i, layer in enumerate(layers)}
    names = {id(m): n for n, m in model.named_modules()}
    layer_names = [names.get(id(layer), "") for layer in layers]
    stack: list[str] = []

    def pre(module: Any, args: Any) -> None:
        region, layer, current = rec.where
        stack.append(current)
        if id(module) in index:
            region, layer = "layer", index[id(module)]
        full = names.get(id(module), "")
        if layer is not None:  # names inside a layer are relative to it, so every layer reads alike
            full = "" if full == layer_names[layer] else full.removeprefix(layer_names[layer] + ".")
        rec.where = (region, layer, full)

    def post(module: Any, args: Any, out: Any) -> None:
        region, layer, _ = rec.where
        if id(module) in index:
            region, layer = "post", None
        rec.where = (region, layer, stack.pop() if stack else "")

    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _cuda_autocast(autocast: str | None) -> Iterator[None]:
    """Switch CUDA autocast's flags on (no CUDA needed: only the thread-local state the model may query)."""
    import torch

    was_on, was_dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    if autocast:
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", torch.bfloat16 if autocast == "bf16" else torch.float16)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", was_on)
        torch.set_autocast_dtype("cuda", was_dtype)


def _run_step(model: Any, rec: Recorder, handler: FunctionHandler, autocast: str | None, batch: int, seq: int,
              vocab: int) -> None:  # fmt: skip
    """Forward -> loss under both modes, then backward under the dispatch mode alone."""
    import torch

    dispatch_mode, function_mode = mode_classes()
    ids = torch.randint(vocab, (batch, seq), device="meta")
    params = [p for p in model.parameters() if p.requires_grad]
    with dispatch_mode(rec):
        with ExitStack() as stack:
            stack.enter_context(_cuda_autocast(autocast))
            stack.enter_context(function_mode(handler))
            loss = _forward_loss(model, ids, rec)
            handler.tag(loss)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise ClusterSimError("the model's loss is not a scalar that requires grad; is every parameter frozen?")
        rec.phase = "bwd"
        loss.backward()
    rec.mark_weight_gradients(params)


def _forward_loss(model: Any, ids: Any, rec: Recorder) -> Any:
    """The model's loss: its own (Hugging Face, labels passed) or cross-entropy over the logits it returns."""
    import torch
    import torch.nn.functional as F

    sig = inspect.signature(model.forward).parameters
    if "labels" in sig and "input_ids" in sig:
        kwargs = {"input_ids": ids, "labels": ids}
        if "use_cache" in sig:
            kwargs["use_cache"] = False
        out = model(**kwargs)
    else:
        out = model(ids)
    loss = getattr(out, "loss", None)
    if loss is not None:
        return loss
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor):
        raise ClusterSimError(f"the model returned {type(out).__name__}; expected logits or an output with .loss")
    rec.where = ("post", None, "loss")
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids.reshape(-1))


def _optimizer_step(params: list[Any], rec: Recorder) -> str:
    """Record an ``AdamW(foreach=True)`` step (state created by an unrecorded first step); else model it."""
    import torch

    dispatch_mode, _ = mode_classes()
    for p in params:
        if p.grad is None:
            p.grad = torch.empty_like(p)
    rec.phase = "opt"
    try:
        opt = torch.optim.AdamW(params, foreach=True)
        opt.step()
        with dispatch_mode(rec):
            opt.step()
        return "adamw-foreach"
    except (RuntimeError, NotImplementedError, TypeError) as exc:  # a meta kernel missing in this torch build
        rec.kernels = [k for k in rec.kernels if k["phase"] != "opt"]
        rec.add(_modelled_adamw(params, exc))
        return "adamw-modelled"


def _modelled_adamw(params: list[Any], exc: BaseException) -> dict[str, Any]:
    """One record standing for a foreach AdamW step when it cannot be traced: 8 kernels x 4 lists x 4 bytes."""
    elems = sum(p.numel() for p in params)
    launches = 8 * max(1, foreach_launches([p.numel() for p in params], 4))
    return {
        "op": "modelled.adamw_foreach_step",
        "kind": "mem",
        "shapes": [],
        "dtypes": [],
        "out_shapes": [],
        "out_dtypes": [],
        "flops": 0.0,
        "bytes": 4.0 * elems * 16,  # param r/w, grad r, exp_avg r/w, exp_avg_sq r/w, denom, over 8 passes
        "gemm": None,
        "attn": None,
        "count": launches,
        "batched": False,
        "note": _first_line(exc),
    }


def _assemble(rec: Recorder, model: Any, layers: list[Any], **meta: Any) -> Trace:
    """The :class:`Trace`: kernels split by region, layers compared, parameters counted."""
    import torch

    kernels = [Kernel.model_validate({k: v for k, v in r.items() if k != "note"}) for r in rec.kernels]
    per_layer: list[list[Kernel]] = [[] for _ in layers]
    for k in kernels:
        if k.region == "layer" and k.layer is not None:
            per_layer[k.layer].append(k)
    same, note = compare_layers(per_layer)
    seen: set[int] = set()
    unique = [p for p in model.parameters() if not (id(p) in seen or seen.add(id(p)))]
    embedding = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    params = ParamCounts(
        total=sum(p.numel() for p in unique),
        embedding=sum(embedding.values()),
        per_layer=[sum(p.numel() for p in layer.parameters()) for layer in layers],
        tensors=len(unique),
    )
    return Trace(
        factory=meta["name"][:300],
        batch=meta["batch"],
        seq=meta["seq"],
        autocast=meta["autocast"],
        fused=sorted(meta["fused"]),
        torch_version=torch.__version__,
        num_layers=len(layers),
        layer_class=meta["layer_class"],
        identical_layers=same,
        layer_note=note,
        params=params,
        optimizer=meta["optimizer"],
        pre=[k for k in kernels if k.region == "pre"],
        layers=per_layer,
        post=[k for k in kernels if k.region == "post"],
        opt=[k for k in kernels if k.region == "opt"],
        dropped=dict(sorted(rec.dropped.items())),
    )


def compare_layers(layers: list[list[Kernel]]) -> tuple[bool, str]:
    """Whether every layer launches the same kernels (op, shapes, dtypes, phase, wgrad); else the first difference."""
    if not layers:
        return True, ""

    def signature(layer: list[Kernel]) -> list[tuple]:
        return [(k.phase, k.op, k.kind, str(k.shapes), str(k.dtypes), str(k.out_shapes), k.wgrad) for k in layer]

    first = signature(layers[0])
    for i, layer in enumerate(layers[1:], start=1):
        sig = signature(layer)
        if sig != first:
            at = next(
                (j for j, (a, b) in enumerate(zip(first, sig, strict=False)) if a != b), min(len(first), len(sig))
            )
            return False, f"layer {i} differs from layer 0 at kernel {at} ({len(sig)} vs {len(first)} kernels)"
    return True, ""

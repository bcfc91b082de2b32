"""Argument checks of the public API entry points: one-line :class:`ClusterSimError` for bad values.

Configs are checked by pydantic; functions called directly from notebooks (``Profile.gemm_time``,
``load_profile``, ``predict_iteration_time``) check their arguments here, so a wrong type, a NaN, an
infinity or an absurd size is a one-line error rather than a TypeError or an OverflowError from deep
inside. :func:`check_numbers` refuses non-finite floats and integers too large to be a count anywhere
in a config (before pydantic sees it, so the message names the field).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hwmodels.catalogue import default_node_for_gpu
from hwmodels.dtypes import normalize_dtype
from hwmodels.errors import ClusterSimError, short

__all__ = [
    "MAX_CONFIG_INT",
    "MAX_SIZE",
    "MAX_TOKENS",
    "WEIGHT_DTYPES",
    "check_count",
    "check_iteration_args",
    "check_numbers",
    "check_parallel_degrees",
]

#: Largest integer a config may hold (2**53: beyond it a float no longer holds every integer, and no
#: count, size or seed in a config comes near it). Bigger ones are typos or attacks (5,000-digit numbers).
MAX_CONFIG_INT = 2**53
#: Largest tensor dimension, in elements, a kernel cost accepts (2**40, ~1.1e12: 500x a 2M-token batch).
MAX_SIZE = 2**40
#: Largest token count of one prompt, chunk or context (10^9: 1,000x the longest context of any model;
#: a billion tokens of KV cache x a few MB each is still far inside int64 bytes).
MAX_TOKENS = 10**9
#: Weight formats a serving replica may hold its weights in.
WEIGHT_DTYPES = ("bf16", "fp16", "fp8", "int8", "int4")


def check_count(name: str, value: Any, *, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    """``value`` as an int in ``[minimum, maximum]``: a whole number (an integral float is accepted),
    not a bool, NaN, infinity or string; a one-line error naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ClusterSimError(f"{name} must be an integer, got {short(value)}")
    if not isinstance(value, numbers.Integral):
        value = float(value)
        if not math.isfinite(value) or not value.is_integer():
            raise ClusterSimError(f"{name} must be a whole number, got {value!r}")
    n = int(value)
    if n < minimum or n > maximum:
        raise ClusterSimError(f"{name}={short(n)} must be between {minimum:,} and {maximum:,}")
    return n


def check_numbers(data: Any, what: str = "config", max_int: int = MAX_CONFIG_INT) -> None:
    """Refuse a non-finite float (inf, NaN) or an integer beyond ``max_int`` anywhere in nested ``data``.

    A one-line error names the dotted location (``site.pue``). Runs before pydantic so the message is
    the same for every field, and so huge integers never reach numpy (OverflowError) or ``str()``.
    """
    stack: list[tuple[Any, str]] = [(data, "")]
    seen: set[int] = set()
    while stack:
        node, at = stack.pop()
        if isinstance(node, bool):
            continue
        where = f"{what}: {at}" if at else what
        if isinstance(node, float) and not math.isfinite(node):
            raise ClusterSimError(f"{where}={node} must be a finite number")
        if isinstance(node, int) and abs(node) > max_int:
            raise ClusterSimError(f"{where} is {_digits(node)} digits long; integers are at most 2**53 ({max_int:.3g})")
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, Mapping):
            items = node.items()
        elif isinstance(node, list | tuple):
            items = enumerate(node)
        else:
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend((value, f"{at}.{key}" if at else str(key)) for key, value in items)


def _digits(n: int) -> str:
    """How many decimal digits ``n`` has, without ``str(n)`` (refused past 4,300 digits)."""
    return f"{max(1, math.floor(n.bit_length() * math.log10(2)) + 1):,}"


def check_parallel_degrees(tp: Any, pp: Any = 1, ep: Any = 1, *, gpus_per_node: int | None = None) -> tuple[int, ...]:
    """``tp``, ``pp`` and ``ep`` as positive ints whose product (the replica's GPUs) fills whole nodes of
    ``gpus_per_node`` when it spans more than one; a one-line error otherwise."""
    degrees = tuple(check_count(n, v, maximum=2**20) for n, v in (("tp", tp), ("pp", pp), ("ep", ep)))
    world = math.prod(degrees)
    if gpus_per_node and world > gpus_per_node and world % gpus_per_node:
        raise ClusterSimError(
            f"tp*pp*ep = {'*'.join(map(str, degrees))} = {world} GPUs spans nodes of {gpus_per_node} GPUs unevenly; "
            f"use a multiple of {gpus_per_node} or at most {gpus_per_node}"
        )
    return degrees


def check_iteration_args(
    gpu: Any,
    tp: Any,
    pp: Any,
    prefill_tokens: Any,
    decode_contexts: Any,
    *,
    weight_dtype: Any = "bf16",
    kv_dtype: Any = "bf16",
) -> tuple[list[tuple[int, int]], list[int]]:
    """The checked arguments of ``predict_iteration_time``: (chunk, cached context) pairs and decode contexts.

    ``gpu`` must be a catalogue id whose node preset ``tp * pp`` GPUs fill evenly; ``prefill_tokens`` holds
    chunk lengths or (chunk, cached-context) pairs, ``decode_contexts`` KV lengths, each a whole number of
    tokens up to :data:`MAX_TOKENS` (chunks and decodes >= 1, contexts >= 0); the dtypes must be known.
    """
    if not isinstance(gpu, str):
        raise ClusterSimError(f"gpu must be a GPU id such as 'h100-sxm5-80gb', got {short(gpu)}")
    check_parallel_degrees(tp, pp, gpus_per_node=default_node_for_gpu(gpu).gpus_per_node)
    if weight_dtype not in WEIGHT_DTYPES:
        raise ClusterSimError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {short(weight_dtype)}")
    if not isinstance(kv_dtype, str):
        raise ClusterSimError(f"kv_dtype must be a dtype name such as 'bf16' or 'fp8', got {short(kv_dtype)}")
    normalize_dtype(kv_dtype)
    chunks: list[tuple[int, int]] = []
    for i, p in enumerate(_sequence("prefill_tokens", prefill_tokens)):
        if isinstance(p, Sequence) and not isinstance(p, str | bytes):
            if len(p) != 2:
                raise ClusterSimError(f"prefill_tokens[{i}] must be a chunk length or a (chunk, context) pair")
            chunk = check_count(f"prefill_tokens[{i}][0]", p[0], maximum=MAX_TOKENS)
            ctx = check_count(f"prefill_tokens[{i}][1]", p[1], minimum=0, maximum=MAX_TOKENS)
            chunks.append((chunk, ctx))
        else:
            chunks.append((check_count(f"prefill_tokens[{i}]", p, maximum=MAX_TOKENS), 0))
    decodes = [
        check_count(f"decode_contexts[{i}]", d, maximum=MAX_TOKENS)
        for i, d in enumerate(_sequence("decode_contexts", decode_contexts))
    ]
    return chunks, decodes


def _sequence(name: str, value: Any) -> Sequence[Any]:
    """``value`` as a list when it is a list, tuple or other non-string iterable; a one-line error otherwise."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ClusterSimError(f"{name} must be a list of token counts, got {short(value)}")
    return list(value)

"""Data types: canonical short names, aliases (PyTorch spellings) and bytes per element."""

from __future__ import annotations

from hwmodels.errors import ClusterSimError, short

#: Canonical dtype names used throughout clustersim (peak tables, profiles, configs).
DTYPES: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")

_ALIASES = {
    "float64": "fp64",
    "double": "fp64",
    "float32": "fp32",
    "float": "fp32",
    "tensorfloat32": "tf32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "e4m3": "fp8",
    "e5m2": "fp8",
}

#: Storage bytes per element (tf32 is stored as fp32; int4 packs two per byte).
BYTES_PER_ELEMENT = {
    "fp64": 8.0,
    "fp32": 4.0,
    "tf32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}


def normalize_dtype(dtype: str) -> str:
    """Return the canonical name for ``dtype`` ('bfloat16' -> 'bf16'), or raise a one-line error."""
    key = str(dtype).strip().lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in BYTES_PER_ELEMENT:
        raise ClusterSimError(f"unknown dtype {short(dtype)}; use one of: {', '.join(DTYPES)}")
    return key


def bytes_per_element(dtype: str) -> float:
    """Bytes one element of ``dtype`` occupies in memory."""
    return BYTES_PER_ELEMENT[normalize_dtype(dtype)]

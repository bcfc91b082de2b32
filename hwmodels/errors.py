"""Typed errors for bad input. Every message is one line that says what to change."""

from __future__ import annotations

from collections.abc import Iterable


class ClusterSimError(ValueError):
    """Bad input from the user (config, name, size). The CLI prints it and exits 2."""


class UnknownNameError(ClusterSimError):
    """A catalogue lookup (GPU, node, link, model preset) found no such name."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str = "") -> None:
        listed = ", ".join(sorted(choices))
        msg = f"unknown {kind} {short(name)}; choose one of: {listed}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.kind = kind
        self.name = name


def short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes a megabyte of input."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}... ({len(text):,} chars)"


def first_validation_error(exc: Exception) -> str:
    """One line from a pydantic ``ValidationError``: 'field.path: message' of the first problem."""
    errors = exc.errors()  # type: ignore[attr-defined]
    first = errors[0]
    loc = ".".join(str(p) if len(str(p)) <= 60 else short(str(p)) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check the spelling"
    line = f"{loc}: {msg}" if loc else msg
    return line + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")

"""Caps on what untrusted input may ask of clustersim: file sizes, document shape, expressions and work.

A config, a sweep file or a link can come from someone else (DESIGN.md, "Untrusted input"). Every cap
the readers and the front ends enforce is defined here, with the reason for its value, so there is one
place to look them up and one to change them:

- file caps: the most bytes read from a file of each kind (checked from the file's metadata before it
  is opened; see :func:`hwmodels.fileio.read_regular_file`);
- shape caps: how deep a YAML/JSON document may nest and how many nodes a YAML document may expand to
  once its aliases are followed (a 637-byte "billion laughs" expands to 10^9 nodes);
- expression caps: the size of a sweep's constraint or objective expression;
- work caps (:class:`WorkCaps`): how big a simulation the app runs (:data:`APP_CAPS`, refused beyond)
  and how big the CLI runs without ``--yes`` (:data:`CLI_CAPS`); the Python API is not capped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hwmodels.profile import MAX_PROFILE_BYTES

__all__ = [
    "APP_CAPS",
    "CLI_CAPS",
    "MAX_CONFIG_BYTES",
    "MAX_CONSTRAINTS",
    "MAX_EXPONENT",
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_NODES",
    "MAX_KERNEL_TRACE_BYTES",
    "MAX_MODEL_FILE_BYTES",
    "MAX_NESTING_DEPTH",
    "MAX_PROFILE_BYTES",
    "MAX_REQUEST_TRACE_BYTES",
    "MAX_ROUTING_TRACE_BYTES",
    "MAX_TABLE_BYTES",
    "MAX_YAML_NODES",
    "SESSION_BUDGET_S",
    "SESSION_WINDOW_S",
    "WorkCaps",
]

MiB = 2**20

# ---- files: the most bytes read from one file ------------------------------------------------------

#: A run or sweep config (YAML/JSON). Real ones are a few KB; 4 MiB leaves room for inline models and lists.
MAX_CONFIG_BYTES = 4 * MiB
#: A Hugging Face ``config.json`` or a ModelSpec YAML (real ones are 1-10 KB).
MAX_MODEL_FILE_BYTES = 1 * MiB
#: A serving request trace (CSV/JSONL, read row by row). Public traces (Azure LLM, BurstGPT) are 10-200 MB.
MAX_REQUEST_TRACE_BYTES = 256 * MiB
#: A MoE routing trace (JSON parsed whole: ~10x its size in Python objects, so 32 MiB stays under ~0.4 GB).
MAX_ROUTING_TRACE_BYTES = 32 * MiB
#: A kernel trace written by ``clustersim trace`` (a few MB for a 100-layer model).
MAX_KERNEL_TRACE_BYTES = 64 * MiB
#: A small data table: an hourly grid-intensity CSV (a year is 9k rows, ~300 KB), a prices YAML.
MAX_TABLE_BYTES = 16 * MiB
# MAX_PROFILE_BYTES (a fitted hardware profile JSON, 16 MiB) is defined beside its reader in
# hwmodels.profile, the layer below this one, and re-exported here.

# ---- document shape ---------------------------------------------------------------------------------

#: Nodes a YAML document may expand to with its aliases followed (scalars, lists and mappings each count
#: one). A large inline model or sweep space is a few thousand; a billion-laughs bomb is 10^9.
MAX_YAML_NODES = 100_000
#: How deep a YAML or JSON document may nest. Configs nest 4-5 levels, routing traces 5; deeper input
#: is an attack on the recursive parsers and validators (RecursionError), refused with a one-line error.
MAX_NESTING_DEPTH = 64

# ---- sweep expressions ------------------------------------------------------------------------------

#: Characters in one constraint or objective (``ttft_s_p99 < 1.0 and mfu > 0.4`` is 32).
MAX_EXPRESSION_CHARS = 500
#: Syntax-tree nodes in one expression (names, numbers and operators each count one).
MAX_EXPRESSION_NODES = 200
#: Largest |exponent| of ``**`` (a constant); values are float64, so this bounds the work, not memory.
MAX_EXPONENT = 64
#: Constraints in one sweep.
MAX_CONSTRAINTS = 64


# ---- work -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkCaps:
    """How big one simulation (or sweep) may be. Costs on one core, measured on the bundled examples:
    training costs ~40 us per pipeline op (micro-batch x stage x virtual stage); serving ~1 us per decoded
    token when batches are full, up to ~15 us when requests arrive one at a time (batch 1)."""

    num_gpus: int  #: GPUs in the cluster (training) or deployment (serving)
    microbatches: int  #: micro-batches per training step (global_batch / (micro_batch x dp))
    pipeline_ops: int  #: micro-batches x pipeline stages x virtual stages: the training engine's events
    layers: int  #: transformer layers of the model
    requests: int  #: requests in one serving run (each is a few arrays' worth of memory)
    output_tokens: int  #: tokens decoded in one serving run (the serving engine's iterations)
    replicas: int  #: serving replicas
    sweep_points: int  #: points in one sweep

    def items(self) -> list[tuple[str, int]]:
        """(name, cap) pairs in declaration order."""
        return list(asdict(self).items())


#: The Streamlit app: a page answers within seconds and uses well under 1 GB. Beyond these the page says
#: what to reduce and points at the CLI. 100k GPUs is the largest cluster built today; 4,096 micro-batches
#: and 65,536 pipeline ops are ~3 s; 10,000 requests / 1M output tokens are ~5 s (up to ~15 s at batch 1).
APP_CAPS = WorkCaps(
    num_gpus=131_072,
    microbatches=4_096,
    pipeline_ops=65_536,
    layers=1_024,
    requests=10_000,
    output_tokens=1_000_000,
    replicas=256,
    sweep_points=64,
)

#: The CLI's interactive scale: beyond these ``clustersim train/serve/dvfs/sweep`` warn and stop unless
#: given ``--yes``. 1M pipeline ops is ~45 s; 200k requests / 50M output tokens are a few minutes and
#: ~100 MB; 10^9 requests would allocate 7.45 GiB per array.
CLI_CAPS = WorkCaps(
    num_gpus=1_048_576,
    microbatches=65_536,
    pipeline_ops=1_048_576,
    layers=4_096,
    requests=200_000,
    output_tokens=50_000_000,
    replicas=4_096,
    sweep_points=20_000,
)

#: The app's per-session time budget: at most SESSION_BUDGET_S seconds of simulation in any
#: SESSION_WINDOW_S window (cached results are free), so one session cannot keep a server busy.
SESSION_BUDGET_S = 180.0
SESSION_WINDOW_S = 600.0

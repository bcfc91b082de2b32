"""Hostile-input corpus of issue #17: 537 inputs through the CLI, the Python API and the app's URLs.

Each case runs in its own process (cwd and ``PYTHONPATH`` = ``--repo``, so an older checkout can be measured
with this same script) and is scored on five counts:

- traceback: "Traceback (most recent call last)" in its output, or (app) an exception shown on the page;
- hang: more than 20 s from the end of its imports, or killed at that limit;
- memory blow-up: peak RSS over 1.5 GB (from ``wait4``), or a MemoryError (each case runs under a 6 GiB
  address-space limit so a runaway allocation cannot take the machine down);
- code execution: a canary file that the payload would create exists afterwards;
- echoed contents: a marker string, placed in a temp file the payload points at, or ``root:x:0:0`` from
  ``/etc/passwd``, appears in the output.

Usage (not part of the test suite; ~10 min on 2 cores)::

    python benchmarks/hostile_inputs.py [--repo PATH] [--jobs 2] [--out after.json]
    python benchmarks/hostile_inputs.py --table before.json after.json   # the Markdown table of docs/hardening.md
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve()
HANG_S = 20.0
BLOWUP_BYTES = 1.5e9
ADDRESS_LIMIT = 6 * 2**30
MARKER = "QZX-MARKER-7f3a9c"  # placed in files the payloads point at; never in a payload itself
PASSWD_LINE = "root:x:0:0"
#: A traceback as Python prints it: at the start of a line (a payload echoed inside an error message is not one).
TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)
CATEGORIES = {
    "yaml": "hostile YAML configs (CLI train/serve/dvfs/plan/sweep)",
    "values": "absurd values in configs (huge ints, 1e76, inf/nan, giant strings, bad types)",
    "files": "file paths in configs and flags (/etc/passwd, /dev/zero, FIFOs, dirs, corrupt .gz)",
    "flags": "CLI flags and --set overrides (claims --only, dvfs caps, Ctrl-C)",
    "sweep": "sweep files: constraints/objectives with attribute access, dunders, calls",
    "api": "Python API with bad arguments (gemm_time, load_profile, predict_iteration_time)",
    "app": "app URL probes (AppTest: /training, /serving, /power, /tradeoffs, /hardware, /compression, /claims)",
}

TRAIN: dict[str, Any] = {
    "model": "llama3-8b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 1, "dp": 1, "sp": True},
    "training": {"seq_len": 8192, "global_batch": 8, "micro_batch": 1, "recompute": "selective", "precision": "bf16"},
}
SERVE: dict[str, Any] = {
    "model": "llama3-8b",
    "gpu": "h100-sxm5-80gb",
    "tp": 1,
    "replicas": 1,
    "batching": {"kind": "continuous", "max_num_seqs": 64, "max_num_batched_tokens": 8192},
    "kv": {"block_size": 16, "dtype": "bf16", "gpu_memory_utilization": 0.9},
    "workload": {
        "num_requests": 50,
        "arrivals": {"kind": "poisson", "rate_per_s": 8.0},
        "lengths": {"kind": "fixed", "prompt_tokens": 256, "output_tokens": 32},
    },
    "slo": {"ttft_s": 1.0, "tpot_s": 0.05},
}
TRACE_SERVE: dict[str, Any] = {
    **SERVE,
    "workload": {
        "num_requests": 20,
        "arrivals": {"kind": "trace"},
        "lengths": {"kind": "trace"},
        "trace": {"path": "{DIR}/trace.csv", "format": "csv"},
    },
}
MOE_TRAIN: dict[str, Any] = {
    "model": "mixtral-8x7b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 1, "pp": 1, "dp": 8, "ep": 8},
    "training": {"seq_len": 2048, "global_batch": 8, "micro_batch": 1},
    "moe_routing": {"source": {"kind": "trace", "path": "{DIR}/routing.json"}},
}
SWEEP_BASE: dict[str, Any] = {
    "base": TRAIN,
    "space": {"parallel.tp": [4, 8], "parallel.pp": [1, 2]},
    "objective": "mfu",
    "constraints": ["memory_per_gpu_gb_peak < 80"],
}


@dataclass
class Case:
    """One hostile input: how to run it (kind + payload) and the files its temp folder holds."""

    id: str
    category: str
    kind: str  # cli | api | app
    payload: Any  # cli: argv; api: Python source; app: [page, {param: value}]
    files: dict[str, Any] = field(default_factory=dict)  # name -> text / bytes / "fifo" / "dir"
    sigint_after_s: float | None = None
    echo_check: bool = False  # a marker-bearing file is involved


# ---- building the corpus ------------------------------------------------------------------------------------


#: A Hugging Face llama config with a million tiny layers (the issue's 10^6-layer inline model).
DEEP_HF_MODEL = {
    "model_type": "llama",
    "num_hidden_layers": 10**6,
    "hidden_size": 64,
    "num_attention_heads": 1,
    "intermediate_size": 64,
    "vocab_size": 100,
}


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(cfg))
    node = out
    *head, last = dotted.split(".")
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def _yaml_with(cfg: dict[str, Any], dotted: str, raw: str) -> str:
    """``cfg`` as YAML with the value at ``dotted`` replaced by the raw YAML text ``raw``."""
    text = yaml.safe_dump(_set(cfg, dotted, "__HOSTILE__"), sort_keys=False, width=10**9)
    return text.replace("__HOSTILE__", raw, 1)


def _cli(cid: str, cat: str, argv: list[str], files: dict[str, Any] | None = None, **kw: Any) -> Case:
    return Case(cid, cat, "cli", argv, files or {}, **kw)


NUMERIC_RAW = {
    "1e76": "1e76",
    "1.0e+76": "1.0e+76",
    "5000-digit": "9" * 5000,
    "inf": ".inf",
    "-inf": "-.inf",
    "nan": ".nan",
    "neg": "-7",
    "zero": "0",
    "2^64+1": str(2**64 + 1),
    "10^12": str(10**12),
    "float": "2.5",
    "string": "'eight'",
    "list": "[1, 2]",
    "dict": "{a: 1}",
    "null": "null",
    "bool": "true",
}
STRING_RAW = {
    "1MB": "'" + "x" * 1_000_000 + "'",
    "list": "[llama3-8b]",
    "dict": "{name: x}",
    "int": "42",
    "null": "null",
    "nul-byte": '"llama\\0x"',
    "traversal": "'../../../../etc/passwd'",
    "newline": '"a\\nb\\nTraceback (most recent call last)"',
}


def value_cases() -> list[Case]:
    """Absurd values at numeric and name fields of training and serving configs."""
    cases = []
    plans = [
        ("train", TRAIN, ["cluster.num_gpus", "parallel.tp", "training.seq_len", "training.global_batch"]),
        ("serve", SERVE, ["replicas", "workload.num_requests", "workload.arrivals.rate_per_s"]),
        ("serve", SERVE, ["kv.gpu_memory_utilization", "slo.ttft_s"]),
    ]
    few = ["1e76", "5000-digit", "inf", "nan", "neg", "string"]
    for cmd, cfg, paths in plans:
        for path in paths:
            names = list(NUMERIC_RAW) if path in ("cluster.num_gpus", "workload.num_requests") else few
            names = names[:4] if path in ("kv.gpu_memory_utilization", "slo.ttft_s") else names
            for name in names:
                cases.append(
                    _cli(
                        f"{cmd}-{path}={name}",
                        "values",
                        [cmd, "{DIR}/c.yaml"],
                        {"c.yaml": _yaml_with(cfg, path, NUMERIC_RAW[name])},
                    )
                )
    for cmd, cfg, path in [("train", TRAIN, "model"), ("serve", SERVE, "batching.kind")]:
        for name, raw in STRING_RAW.items():
            cases.append(
                _cli(f"{cmd}-{path}={name}", "values", [cmd, "{DIR}/c.yaml"], {"c.yaml": _yaml_with(cfg, path, raw)})
            )
    # a whole section of the wrong type, unknown keys, and the HF dict with model_type a list
    for cmd, cfg, sec in [("train", TRAIN, "parallel"), ("serve", SERVE, "workload")]:
        for name, raw in [("list", "[1, 2, 3]"), ("string", "'auto'"), ("int", "8"), ("unknown-key", "{bogus: 1}")]:
            cases.append(
                _cli(f"{cmd}-{sec}-as-{name}", "values", [cmd, "{DIR}/c.yaml"], {"c.yaml": _yaml_with(cfg, sec, raw)})
            )
    hf = {"model_type": ["llama"], "num_hidden_layers": 2, "hidden_size": 64}
    cases.append(
        _cli(
            "train-hf-dict-model_type-list",
            "values",
            ["train", "{DIR}/c.yaml"],
            {"c.yaml": yaml.safe_dump(_set(TRAIN, "model", hf))},
        )
    )
    deep = DEEP_HF_MODEL
    cases.append(
        _cli(
            "train-inline-model-10^6-layers",
            "values",
            ["train", "{DIR}/c.yaml"],
            {"c.yaml": yaml.safe_dump(_set(TRAIN, "model", deep))},
        )
    )
    return cases


def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines)


def yaml_cases() -> list[Case]:
    """Structural attacks on the YAML reader, through each command that reads a config file."""
    bomb9 = _alias_bomb(9)
    bodies: dict[str, str | bytes] = {
        "alias-bomb-top": bomb9 + "\n",
        "alias-bomb-as-model": bomb9
        + f"\nmodel: *a8\n{yaml.safe_dump({k: v for k, v in TRAIN.items() if k != 'model'})}",
        "alias-bomb-637-bytes": _alias_bomb(7, 9) + "\nmodel: *a6\n",
        "alias-bomb-wide": "x: &x "
        + "["
        + ",".join(["y"] * 500)
        + "]\n"
        + "".join(f"x{i}: &x{i} [" + ",".join([f"*x{'' if i == 0 else i - 1}"] * 50) + "]\n" for i in range(4)),
        "deep-flow-100": "model: " + "[" * 100 + "]" * 100 + "\n",
        "deep-flow-2000": "model: " + "[" * 2000 + "]" * 2000 + "\n",
        "deep-flow-100000": "model: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep-map-100000": "model: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n",
        "deep-block-3000": "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v\n",
        "non-utf8": b"model: llama3-8b\ncluster: {gpu: \xff\xfe\xfa}\n",
        "latin1": "model: llama3-8b  # caf\xe9\n".encode("latin-1"),
        "utf16-bom": "model: llama3-8b\n".encode("utf-16"),
        "nul-bytes": b"model: llama3\x00-8b\n",
        "binary-garbage": bytes(range(256)) * 64,
        "empty": "",
        "only-comment": "# nothing here\n",
        "top-level-list": "- model\n- llama3-8b\n",
        "top-level-scalar": "42\n",
        "top-level-string": "'" + "x" * 100_000 + "'\n",
        "duplicate-keys": yaml.safe_dump(TRAIN) + "model: gpt3-175b\n",
        "python-tag-os-system": "model: !!python/object/apply:os.system ['touch {DIR}/canary']\n",
        "python-name-tag": "model: !!python/name:os.system\n",
        "python-module-tag": "model: !!python/module:os\n",
        "merge-key": "defaults: &d {gpu: h100-sxm5-80gb, num_gpus: 8}\n"
        + yaml.safe_dump(_set(TRAIN, "cluster", {})).replace("cluster: {}", "cluster: {<<: *d}"),
        "tabs": "model:\tllama3-8b\n\tcluster: x\n",
        "unclosed": "model: [unclosed\n",
        "huge-key": "x" * 2_000_000 + ": 1\n",
        "10MB-comment": "#" + "x" * 10_000_000 + "\n" + yaml.safe_dump(TRAIN),
        "many-keys": "".join(f"k{i}: {i}\n" for i in range(200_000)),
        "binary-tag": "model: !!binary aGVsbG8=\n",
        "set-tag": "model: !!set {a, b}\n",
        "timestamp": "model: 2001-12-14t21:59:43.10-05:00\n",
    }
    cases = []
    others = {
        "serve": [
            "alias-bomb-top",
            "alias-bomb-as-model",
            "alias-bomb-637-bytes",
            "deep-flow-2000",
            "deep-flow-100000",
            "deep-map-100000",
            "non-utf8",
            "nul-bytes",
            "binary-garbage",
            "python-tag-os-system",
            "huge-key",
            "many-keys",
        ],
        "dvfs": [
            "alias-bomb-637-bytes",
            "deep-flow-100000",
            "non-utf8",
            "python-tag-os-system",
            "empty",
            "top-level-list",
        ],
    }
    for cmd in ("train", "serve", "dvfs"):
        for name, body in bodies.items():
            if cmd == "train" or name in others[cmd]:
                cases.append(_cli(f"{cmd}-{name}", "yaml", [cmd, "{DIR}/c.yaml"], {"c.yaml": body}))
    for name in (
        "alias-bomb-top",
        "alias-bomb-as-model",
        "deep-flow-100000",
        "non-utf8",
        "python-tag-os-system",
        "top-level-list",
        "empty",
    ):
        body = bodies[name]
        cases.append(_cli(f"sweep-{name}", "yaml", ["sweep", "{DIR}/s.yaml"], {"s.yaml": body}))
        cases.append(
            _cli(
                f"plan-serve-{name}",
                "yaml",
                ["plan", "serve", "{DIR}/c.yaml", "--rate", "2", "--requests", "50", "--tp", "1"],
                {"c.yaml": body},
            )
        )
    for name in ("alias-bomb-as-model", "deep-flow-100000", "non-utf8"):
        cases.append(
            _cli(
                f"plan-train-model-file-{name}",
                "yaml",
                ["plan", "train", "{DIR}/m.yaml", "--gpus", "8", "--gpu", "h100-sxm5-80gb", "--workers", "1"],
                {"m.yaml": bodies[name]},
            )
        )
    return cases


def _marker_csv() -> str:
    return f"arrival_s,prompt_tokens,{MARKER}\n{MARKER},1,1\n"


def file_cases() -> list[Case]:
    """Configs and flags naming files they should not read, or read without limit."""
    gz_nested = gzip.compress(json.dumps([[[{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}]]]).encode())
    targets: dict[str, tuple[str, dict[str, Any], bool]] = {
        # name: (path as written, files to create, marker involved)
        "etc-passwd": ("/etc/passwd", {}, True),
        "dev-zero": ("/dev/zero", {}, False),
        "dev-urandom": ("/dev/urandom", {}, False),
        "fifo": ("{DIR}/pipe", {"pipe": "fifo"}, False),
        "directory": ("{DIR}/adir", {"adir": "dir"}, False),
        "missing": ("{DIR}/no-such-file.csv", {}, False),
        "enametoolong": ("{DIR}/" + "x" * 5000, {}, False),
        "marker-csv": ("{DIR}/secret.csv", {"secret.csv": _marker_csv()}, True),
        "marker-json": ("{DIR}/secret.json", {"secret.json": f'{{"{MARKER}": [1, 2, {MARKER}]}}'}, True),
        "marker-jsonl": ("{DIR}/secret.jsonl", {"secret.jsonl": f'{{"arrival_s": "{MARKER}"}}\n'}, True),
        "marker-yaml": ("{DIR}/secret.yaml", {"secret.yaml": f"{MARKER}: [unclosed\n"}, True),
        "corrupt-gz": ("{DIR}/t.csv.gz", {"t.csv.gz": b"\x1f\x8b\x08\x00garbage" + MARKER.encode()}, True),
        "nested-json-gz": ("{DIR}/t.json.gz", {"t.json.gz": gz_nested}, False),
        "non-utf8-trace": ("{DIR}/t.csv", {"t.csv": b"arrival_s,prompt_tokens,output_tokens\n\xff\xfe,1,1\n"}, False),
        "1e30-tokens": ("{DIR}/t.csv", {"t.csv": "arrival_s,prompt_tokens,output_tokens\n0,1e30,1e30\n"}, False),
        "symlink-passwd": ("{DIR}/link.csv", {"link.csv": ("symlink", "/etc/passwd")}, True),
    }
    cases = []
    for name, (path, files, marker) in targets.items():
        fmt = "csv" if not path.endswith((".json", ".jsonl", ".json.gz")) else "jsonl" if "jsonl" in path else "json"
        trace_cfg = _set(TRACE_SERVE, "workload.trace", {"path": path, "format": fmt})
        routing_cfg = _set(MOE_TRAIN, "moe_routing.source.path", path)
        model_cfg = _set(TRAIN, "model", path)
        for label, cmd, cfg in [
            ("trace", "serve", trace_cfg),
            ("routing", "train", routing_cfg),
            ("model", "train", model_cfg),
        ]:
            cases.append(
                _cli(
                    f"{label}-path-{name}",
                    "files",
                    [cmd, "{DIR}/c.yaml"],
                    {**files, "c.yaml": yaml.safe_dump(cfg)},
                    echo_check=marker,
                )
            )
        if name in (
            "dev-urandom",
            "enametoolong",
            "marker-jsonl",
            "nested-json-gz",
            "non-utf8-trace",
            "1e30-tokens",
            "symlink-passwd",
            "missing",
        ):
            continue
        cases.append(
            _cli(
                f"profile-{name}",
                "files",
                ["train", "{DIR}/c.yaml", "--profile", path],
                {**files, "c.yaml": yaml.safe_dump(TRAIN)},
                echo_check=marker,
            )
        )
        cases.append(_cli(f"config-file-{name}", "files", ["train", path], files, echo_check=marker))
        if name in ("etc-passwd", "dev-zero", "fifo", "marker-json", "marker-yaml", "corrupt-gz"):
            cases.append(_cli(f"sweep-file-{name}", "files", ["sweep", path], files, echo_check=marker))
            cases.append(
                _cli(
                    f"serve-trace-columns-{name}",
                    "files",
                    ["serve", "{DIR}/c.yaml"],
                    {
                        **files,
                        "c.yaml": yaml.safe_dump(
                            _set(trace_cfg, "workload.trace.columns", {"arrival_s": MARKER[::-1]})
                        ),
                    },
                    echo_check=marker,
                )
            )
    cases.append(
        _cli(
            "sweep-out-dev-full",
            "files",
            ["sweep", "{DIR}/s.yaml", "--out", "/dev/full"],
            {"s.yaml": yaml.safe_dump(SWEEP_BASE)},
        )
    )
    cases.append(
        _cli(
            "sweep-cache-dir-is-file",
            "files",
            ["sweep", "{DIR}/s.yaml", "--cache-dir", "/etc/passwd"],
            {"s.yaml": yaml.safe_dump(SWEEP_BASE)},
        )
    )
    cases.append(_cli("claims-out-directory", "files", ["claims", "--only", "C1", "--out", "{DIR}"], {}))
    return cases


def flag_cases() -> list[Case]:
    """Flags and --set overrides a new user or an attacker would try."""
    quick = ["{DIR}/c.yaml"]
    files = {"c.yaml": yaml.safe_dump(TRAIN)}
    sfiles = {"c.yaml": yaml.safe_dump(SERVE)}
    cases = []
    train_sets = [
        "training.seq_len=1e76",
        "training.seq_len=" + "9" * 5000,
        "training.seq_len=.inf",
        "training.seq_len=nan",
        "cluster.num_gpus=1000000000000",
        "training.global_batch=1000000000000",
        "training.global_batch=153600",
        "parallel.tp=0",
        "parallel.tp=-1",
        "parallel.tp=3",
        "model=" + "x" * 200_000,
        "model=/etc/passwd",
        "model=../../etc/passwd",
        "nokey",
        "=1",
        "parallel=8",
        "parallel.tp.x=1",
        "cluster.gpu=" + "y" * 100_000,
        "seed=" + "1" * 5000,
        "training.seq_len={a: 1}",
        "training.seq_len=!!python/object/apply:os.system ['touch {DIR}/canary']",
    ]
    for s in train_sets:
        cases.append(_cli(f"train-set-{s[:40]}", "flags", ["train", *quick, "--set", s], files))
    serve_sets = [
        "replicas=12",
        "replicas=1000000000",
        "workload.num_requests=1000000000",
        "kv.host_gb=.inf",
        "kv.host_gb=-1",
        "tp=4",
        "tp=3",
        "workload.arrivals.rate_per_s=1e-300",
        "workload.arrivals.rate_per_s=.inf",
        "slo.ttft_s=nan",
        "batching.max_num_seqs=0",
        "batching.kind=nonexistent",
        "workload.lengths.prompt_tokens=1000000000",
    ]
    for s in serve_sets:
        cases.append(_cli(f"serve-set-{s[:40]}", "flags", ["serve", *quick, "--set", s], sfiles))
    cases += [
        _cli("serve-attainment-2", "flags", ["serve", *quick, "--max-rate", "--attainment", "2"], sfiles),
        _cli("serve-attainment-nan", "flags", ["serve", *quick, "--max-rate", "--attainment", "nan"], sfiles),
    ]
    for only in ["C99", "c5", "C0", "C-1", "", "C" + "9" * 5000, "../C1", "C1;touch x"]:
        cases.append(_cli(f"claims-only-{only[:20]}", "flags", ["claims", "--only", only], {}))
    dvfs = [
        ["--caps", "300,400"],
        ["--caps", "inf"],
        ["--caps", "1e76"],
        ["--caps", "-5"],
        ["--caps", "0"],
        ["--caps", "nan"],
        ["--caps", ""],
        ["--caps", ",,,"],
        ["--clocks", "-1"],
        ["--clocks", "1e76"],
        ["--clocks", "abc"],
        ["--clocks", ",".join(["1000"] * 2000)],
        ["--clocks", "0"],
        ["--caps", "300", "--clocks", "1000"],
    ]
    for flags in dvfs:
        cases.append(_cli(f"dvfs-{' '.join(flags)[:40]}", "flags", ["dvfs", *quick, *flags], files))
    plan = [
        ["--gpus", "1000000000000"],
        ["--gpus", "0"],
        ["--gpus", "-8"],
        ["--gpus", "nan"],
        ["--gpus", "8", "--global-batch", "1e76"],
        ["--gpus", "8", "--seq-len", "9" * 5000],
        ["--gpus", "8", "--space", "tp=0"],
        ["--gpus", "8", "--space", "tp=__import__('os')"],
        ["--gpus", "8", "--space", "bogus=1"],
        ["--gpus", "8", "--simulate", "-1"],
        ["--gpus", "8", "--top", "0"],
    ]
    for flags in plan:
        argv = ["plan", "train", "llama3-8b", "--gpu", "h100-sxm5-80gb", "--workers", "1", *flags]
        cases.append(_cli(f"plan-train-{' '.join(flags)[:40]}", "flags", argv, {}))
    for flags in [
        ["--rate", "inf"],
        ["--rate", "-1"],
        ["--rate", "1e76"],
        ["--rate", "2", "--tp", "3"],
        ["--rate", "2", "--requests", "1000000000"],
        ["--rate", "2", "--tp", "0,-1"],
    ]:
        cases.append(_cli(f"plan-serve-{' '.join(flags)[:40]}", "flags", ["plan", "serve", *quick, *flags], sfiles))
    # Ctrl-C while a sweep runs (the issue saw a KeyboardInterrupt traceback)
    big = {
        **SWEEP_BASE,
        "base": SERVE,
        "space": {"batching.max_num_seqs": [4, 8, 16, 32, 64, 128, 256, 512]},
        "objective": None,
        "constraints": [],
    }
    big["base"] = _set(SERVE, "workload.num_requests", 2000)
    for after in (1.0, 2.5):
        cases.append(
            _cli(
                f"sweep-ctrl-c-after-{after}s",
                "flags",
                ["sweep", "{DIR}/s.yaml", "--cache-dir", "{DIR}/cache"],
                {"s.yaml": yaml.safe_dump({k: v for k, v in big.items() if v not in (None, [])})},
                sigint_after_s=after,
            )
        )
    return cases


EXPRESSIONS = [
    "ttft_s_p99.__class__.__init__.__globals__['sys'].modules['os'].system('touch {DIR}/canary')",
    "mfu.to_csv('{DIR}/canary')",
    "mfu.__class__",
    "__import__('os').system('touch {DIR}/canary')",
    "@__builtins__",
    "@pd.io.common.os.system('touch {DIR}/canary')",
    "mfu.__class__.__mro__[1].__subclasses__()",
    "mfu.pipe(print)",
    "mfu.apply(lambda x: open('{DIR}/canary', 'w'))",
    "(lambda: 1)()",
    "open('{DIR}/canary', 'w')",
    'exec(\'open("{DIR}/canary", "w")\')',
    "eval('1')",
    "getattr(mfu, 'to_csv')('{DIR}/canary')",
    "mfu.values.tofile('{DIR}/canary')",
    "mfu.to_pickle('{DIR}/canary')",
    "`mfu`.to_json('{DIR}/canary')",
    "mfu[0]",
    "mfu if mfu else 1",
    "[x for x in mfu]",
    "mfu > 0 and __debug__",
    "mfu.__dict__",
    "mfu ** 10 ** 10 ** 10",
    "9 ** 9 ** 9 ** 9",
    "(" * 5000 + "mfu" + ")" * 5000,
    "mfu + " * 20_000 + "mfu",
    "'x' * 10 ** 10",
    "mfu > 0; import os",
    "mfu @ mfu",
    "mfu.astype('str').str.cat()",
    "step_time_s.__len__()",
    "tokens_per_s.sum() > 0",
    "__class__",
    "a\u0000b",
    "mfu > 0 # comment",
    "mfu in [0.5]",
    "not_a_column > 1",
    "",
]


def sweep_cases() -> list[Case]:
    """Sweep files whose constraints or objective try to run code, plus structural attacks on the spec."""
    cases = []
    for i, expr in enumerate(EXPRESSIONS):
        for where in ("constraint", "objective") if i < 12 else ("constraint",):
            spec = dict(SWEEP_BASE)
            if where == "constraint":
                spec["constraints"] = [expr]
            else:
                spec["objective"] = expr
            cases.append(
                _cli(f"sweep-{where}-{i:02d}", "sweep", ["sweep", "{DIR}/s.yaml"], {"s.yaml": yaml.safe_dump(spec)})
            )
    structural = {
        "grid-10^12": {**SWEEP_BASE, "space": {f"training.seed{i}": list(range(1000)) for i in range(4)}},
        "huge-grid-real-keys": {
            **SWEEP_BASE,
            "space": {"training.global_batch": list(range(8, 80_000, 8)), "parallel.tp": [1, 2, 4, 8]},
        },
        "space-not-a-dict": {**SWEEP_BASE, "space": [1, 2]},
        "space-values-not-list": {**SWEEP_BASE, "space": {"parallel.tp": 8}},
        "space-empty-list": {**SWEEP_BASE, "space": {"parallel.tp": []}},
        "space-dunder-path": {**SWEEP_BASE, "space": {"__class__.__init__": [1]}},
        "space-deep-path": {**SWEEP_BASE, "space": {".".join(["a"] * 5000): [1]}},
        "random-samples-10^12": {**SWEEP_BASE, "mode": "random", "samples": 10**12},
        "random-samples-neg": {**SWEEP_BASE, "mode": "random", "samples": -1},
        "mode-bogus": {**SWEEP_BASE, "mode": "bogus"},
        "constraints-not-list": {**SWEEP_BASE, "constraints": "mfu > 0"},
        "constraints-dict": {**SWEEP_BASE, "constraints": {"a": 1}},
        "objective-int": {**SWEEP_BASE, "objective": 5},
        "base-missing": {k: v for k, v in SWEEP_BASE.items() if k != "base"},
        "base-path-passwd": {**SWEEP_BASE, "base": "/etc/passwd"},
        "base-path-dev-zero": {**SWEEP_BASE, "base": "/dev/zero"},
        "unknown-key": {**SWEEP_BASE, "bogus": 1},
    }
    for name, spec in structural.items():
        cases.append(
            _cli(
                f"sweep-spec-{name}",
                "sweep",
                ["sweep", "{DIR}/s.yaml"],
                {"s.yaml": yaml.safe_dump(spec)},
                echo_check=name == "base-path-passwd",
            )
        )
    return cases


def api_cases() -> list[Case]:
    """The Python API with arguments a notebook user could pass by mistake."""
    prof = (
        "from hwmodels.profile import load_profile\nfrom simulator.core.costs import gemm_time\n"
        "p = load_profile(gpu='h100-sxm5-80gb')\n"
    )
    bad_dims = [
        "0",
        "-1",
        "1.5",
        "float('nan')",
        "float('inf')",
        "10**30",
        "10**5000",
        "'64'",
        "None",
        "True",
        "[64]",
        "2**63",
    ]
    cases = []
    for i, d in enumerate(bad_dims):
        cases.append(Case(f"api-gemm_time-M={d}", "api", "api", prof + f"gemm_time(p, {d}, 4096, 4096)"))
        if i % 2:
            cases.append(Case(f"api-profile.gemm_time-K={d}", "api", "api", prof + f"p.gemm_time(4096, 4096, {d})"))
    for dt in ["'fp3'", "None", "5", "'bf16' * 10000", "''"]:
        cases.append(Case(f"api-gemm_time-dtype={dt[:20]}", "api", "api", prof + f"gemm_time(p, 64, 64, 64, {dt})"))
        cases.append(
            Case(
                f"api-gemm_time-weight_dtype={dt[:20]}",
                "api",
                "api",
                prof + f"gemm_time(p, 64, 64, 64, weight_dtype={dt})",
            )
        )
    lp = "from hwmodels.profile import load_profile\n"
    for i, arg in enumerate(
        [
            "'/etc/passwd'",
            "'/dev/zero'",
            "'{DIR}'",
            "'{DIR}/secret.json'",
            "'{DIR}/pipe'",
            "5",
            "['h100']",
            "'x' * 1_000_000",
            "'../../etc/passwd'",
            "'nope'",
            "b'\\xff'",
            "'{DIR}/bad.json'",
        ]
    ):
        files = {
            "secret.json": f'{{"schema_version": "{MARKER}", "x": [{MARKER}]}}',
            "pipe": "fifo",
            "bad.json": b"\xff\xfe{" + MARKER.encode(),
        }
        cases.append(
            Case(f"api-load_profile-{i:02d}", "api", "api", lp + f"load_profile({arg})", files, echo_check=True)
        )
    for gpu in ["'nope'", "5", "None", "'x' * 1_000_000", "['h100-sxm5-80gb']"]:
        cases.append(Case(f"api-load_profile-gpu={gpu[:20]}", "api", "api", lp + f"load_profile(gpu={gpu})"))
    pit = "from simulator.serving.iteration import predict_iteration_time as f\n"
    calls = [
        "f('llama3-8b', 'h100-sxm5-80gb', tp=4, pp=5, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', tp=0, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', tp=3, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', tp=-8, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', tp=1.5, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', tp='8', decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', tp=10**12, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', pp=0, decode_contexts=[100])",
        "f('llama3-8b', 'nope', decode_contexts=[100])",
        "f('nope', 'h100-sxm5-80gb', decode_contexts=[100])",
        "f('x' * 1_000_000, 'h100-sxm5-80gb', decode_contexts=[100])",
        "f('/etc/passwd', 'h100-sxm5-80gb', decode_contexts=[100])",
        "f(5, 'h100-sxm5-80gb', decode_contexts=[100])",
        "f('llama3-8b', 5, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[float('nan')])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[float('inf')])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[10**30])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[10**5000])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=['100'])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[None])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[[1]])",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=5)",
        "f('llama3-8b', 'h100-sxm5-80gb', decode_contexts=[100] * 10_000_000)",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens=[float('nan')])",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens=[1e30])",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens=[(1, 2, 3)])",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens=[('a', 1)])",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens=[(100, -1)])",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens=[{}])",
        "f('llama3-8b', 'h100-sxm5-80gb', prefill_tokens='abc')",
        "f('llama3-8b', 'h100-sxm5-80gb', weight_dtype='fp3', decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', kv_dtype=None, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', stack='nope', decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', stack=5, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', profile='/etc/passwd', decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb', profile=5, decode_contexts=[100])",
        "f('llama3-8b', 'h100-sxm5-80gb')",
        "f({'model_type': ['llama']}, 'h100-sxm5-80gb', decode_contexts=[100])",
    ]
    for i, call in enumerate(calls):
        cases.append(Case(f"api-predict_iteration_time-{i:02d}", "api", "api", pit + call))
    return cases


def _j(obj: Any) -> str:
    return json.dumps(obj)


def app_cases() -> list[Case]:
    """URLs a visitor could send to each page."""
    small_train = {"model": "llama3.2-1b", "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8}}
    trace = {"num_requests": 20, "arrivals": {"kind": "trace"}, "lengths": {"kind": "trace"}}
    serve_trace = {**SERVE, "workload": {**trace, "trace": {"path": "/etc/passwd", "format": "csv"}}}
    serve_marker = {**SERVE, "workload": {**trace, "trace": {"path": "{DIR}/secret.csv", "format": "csv"}}}
    serve_cols = {
        **SERVE,
        "workload": {
            **trace,
            "trace": {"path": "/etc/passwd", "format": "csv", "columns": {"arrival_s": "x", "prompt_tokens": "y"}},
        },
    }
    moe_zero = _set(MOE_TRAIN, "moe_routing.source.path", "/dev/zero")
    files = {"secret.csv": _marker_csv(), "secret.json": f'{{"model_type": "{MARKER}"}}'}
    probes: list[tuple[str, str, Any]] = [
        ("training", "train", {"training": {"global_batch": 153600}}),
        ("training", "train", {"training": {"global_batch": 10**12}}),
        (
            "training",
            "train",
            {
                "cluster": {"num_gpus": 10**12},
                "parallel": {"dp": 15625 * 10**6},
                "training": {"global_batch": 15625 * 10**6},
            },
        ),
        (
            "training",
            "train",
            {"model": DEEP_HF_MODEL},
        ),
        ("training", "train", {"model": "/etc/passwd"}),
        ("training", "train", {"model": "{DIR}/secret.json"}),
        ("training", "train", {"model": "/etc/no-such-file.json"}),
        ("training", "train", moe_zero),
        ("training", "train", {"training": {"seq_len": 1e76}}),
        ("training", "train", {"training": {"seq_len": "9" * 5000}}),
        ("training", "train", {"stack": {"traced": "/etc/passwd"}}),
        ("training", "train", {"model": "x" * 1_000_000}),
        ("training", "b", {"pp": 10**9}),
        ("training", "b", {"tp": "../../etc/passwd"}),
        ("serving", "serve", serve_trace),
        ("serving", "serve", serve_marker),
        ("serving", "serve", serve_cols),
        ("serving", "serve", {**SERVE, "workload": {**trace, "trace": {"path": "/dev/zero", "format": "csv"}}}),
        ("serving", "serve", {**SERVE, "workload": {**SERVE["workload"], "num_requests": 10**9}}),
        ("serving", "serve", {**SERVE, "replicas": 10**9}),
        ("serving", "serve", {**SERVE, "replicas": 12}),
        ("serving", "serve", {**SERVE, "kv": {"host_gb": "Infinity"}}),
        ("serving", "serve", {**SERVE, "model": "/etc/passwd"}),
        ("power", "power", {"workload": "custom", "config": serve_trace}),
        ("power", "power", {"workload": "custom", "config": serve_cols}),
        ("power", "power", {"workload": "custom", "config": serve_marker}),
        ("power", "power", {"workload": "custom", "config": moe_zero}),
        ("power", "power", {"workload": "custom", "config": {**small_train, "model": "/etc/passwd"}}),
        ("power", "power", {"workload": "custom", "config": {**small_train, "model": "{DIR}/secret.json"}}),
        (
            "power",
            "power",
            {"workload": "custom", "config": {**SERVE, "workload": {**SERVE["workload"], "num_requests": 10**9}}},
        ),
        ("power", "power", {"site": {"pue": "Infinity"}}),
        ("tradeoffs", "sweep", {"constraints": [EXPRESSIONS[0]]}),
        ("tradeoffs", "sweep", {"objective": EXPRESSIONS[1]}),
        ("tradeoffs", "sweep", {"knobs": {"tp": list(range(1, 100_000))}}),
        ("tradeoffs", "sweep", {"knobs": {"tp": ["/etc/passwd"]}}),
        ("tradeoffs", "sweep", {"base": {"model": "/etc/passwd"}}),
        ("compression", "comp", {"cp_plan": "/etc/passwd"}),
        ("compression", "comp", {"cp_plan": "planner", "cp_fraction_pct": 1e308, "cp_rank": 10**9}),
        ("compression", "comp", {"cp_every_k": -1, "cp_uniform_bits": "9" * 5000, "cp_log_bits": 1e76}),
        ("compression", "comp", {"cp_error_feedback": {"__class__": 1}, "cp_steps_multiplier": "Infinity"}),
        ("compression", "comp", {"cp_plan": ["gpt3"] * 10**5}),
        ("claims", "train", {"model": "/etc/passwd"}),
        ("claims", "comp", {"cp_rank": 10**9}),
        ("claims", "only", "C99"),
        ("hardware", "gpu", "../../etc/passwd"),
        ("hardware", "gpu", "/etc/passwd"),
        ("hardware", "gpu", "x" * 1_000_000),
        ("hardware", "gpu", "h100-sxm5-80gb\n<script>alert(1)</script>"),
    ]
    cases = []
    for i, (page, param, value) in enumerate(probes):
        raw = value if isinstance(value, str) else _j(value)
        cases.append(Case(f"app-{page}-{i:02d}", "app", "app", [page, {param: raw}], files, echo_check=True))
    raw_attacks = [
        '{"a":' * 3000 + "1" + "}" * 3000,
        "not json",
        "[" * 100_000,
        "1e999999",
        "\udcff",
        "x" * 2_000_000,
        '{"__class__": {"__init__": 1}}',
    ]
    pages = [
        ("training", "train"),
        ("serving", "serve"),
        ("power", "power"),
        ("tradeoffs", "sweep"),
        ("compression", "comp"),
    ]
    for page, param in pages:
        for j, raw in enumerate(raw_attacks[:4]):
            cases.append(Case(f"app-{page}-raw-{j}", "app", "app", [page, {param: raw}]))
    return cases


def corpus() -> list[Case]:
    """Every case, in a fixed order."""
    return yaml_cases() + value_cases() + file_cases() + flag_cases() + sweep_cases() + api_cases() + app_cases()


# ---- running one case (in a child process) ------------------------------------------------------------------


def _child(spec_path: str) -> None:
    """Run one case in this process; write its own timing to $HOSTILE_RESULT (the parent scores the rest)."""
    case = json.loads(Path(spec_path).read_text())
    result = Path(os.environ["HOSTILE_RESULT"])
    kind, payload = case["kind"], case["payload"]
    app_package = _alias_app(Path.cwd())
    if kind == "cli":
        from simulator.cli import main  # noqa: PLC0415 - from the repo under test
    elif kind == "app":
        from streamlit.testing.v1 import AppTest  # noqa: PLC0415
    import simulator  # noqa: PLC0415

    where = {"simulator": str(Path(simulator.__file__).parent), "simulator.app": app_package}
    result.with_suffix(".start").write_text(str(time.time()))
    start = time.perf_counter()
    try:
        if kind == "cli":
            code = main(payload)
            print(f"[exit {code}]")
        elif kind == "api":
            _run_api(payload)
        else:
            _run_app(AppTest, payload)
    finally:
        result.write_text(json.dumps({"wall_s": time.perf_counter() - start, **where}))


def _alias_app(repo: Path) -> str:
    """Import ``simulator.app`` from ``repo``/app: the editable install maps that name to the installed
    checkout's app/ folder, which would mix two trees when ``repo`` is another checkout."""
    import importlib.util  # noqa: PLC0415

    import simulator  # noqa: PLC0415, F401

    init = repo / "app" / "__init__.py"
    if not init.exists():
        return "absent"
    spec = importlib.util.spec_from_file_location("simulator.app", init, submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulator.app"] = module
    spec.loader.exec_module(module)
    return str(init.parent)


def _run_api(source: str) -> None:
    from hwmodels.errors import ClusterSimError  # noqa: PLC0415

    try:
        exec(compile(source, "<case>", "exec"), {})  # noqa: S102 - the case is this script's own code
    except ClusterSimError as exc:
        print(f"ClusterSimError: {exc}")


def _run_app(app_test: Any, payload: list[Any]) -> None:
    page, params = payload
    at = app_test.from_file(str(Path.cwd() / "app" / "views" / f"{page}.py"), default_timeout=HANG_S + 10)
    at.query_params.update(params)
    at.run()
    for e in at.exception:
        print("Traceback (most recent call last): [page exception]", e.value, *getattr(e, "stack_trace", []))
    shown = [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    shown += (
        [c.value for c in at.caption] + [m.value for m in at.markdown] + [f"{m.label} {m.value}" for m in at.metric]
    )
    for df in at.dataframe:
        shown.append(str(df.value))
    print("\n".join(str(s) for s in shown))


# ---- running and scoring every case (the parent) ------------------------------------------------------------


def _fill(obj: Any, folder: str) -> Any:
    if isinstance(obj, str):
        return obj.replace("{DIR}", folder)
    if isinstance(obj, list):
        return [_fill(o, folder) for o in obj]
    if isinstance(obj, dict):
        return {_fill(k, folder): _fill(v, folder) for k, v in obj.items()}
    return obj


def _make_files(folder: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = folder / name
        if content == "fifo":
            os.mkfifo(path)
        elif content == "dir":
            path.mkdir()
        elif isinstance(content, tuple) and content[0] == "symlink":
            path.symlink_to(content[1])
        elif isinstance(content, bytes):
            path.write_bytes(content.replace(b"{DIR}", str(folder).encode()))
        else:
            path.write_text(content.replace("{DIR}", str(folder)))


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))
    os.setsid()


def run_case(case: Case, repo: Path, scratch: Path) -> dict[str, Any]:
    """Run ``case`` in a child process against ``repo`` and score it."""
    folder = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
    _make_files(folder, case.files)
    spec = folder / "case.spec"
    spec.write_text(json.dumps({"kind": case.kind, "payload": _fill(case.payload, str(folder))}))
    result = folder / "result.json"
    env = {**os.environ, "PYTHONPATH": str(repo), "HOSTILE_RESULT": str(result), "COLUMNS": "100"}
    env.pop("CI", None)
    with (folder / "out.txt").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "--child", str(spec)],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_limits,
        )
        rusage, killed, began = _wait(proc, result.with_suffix(".start"), case.sigint_after_s)
    text = (folder / "out.txt").read_bytes().decode("utf-8", "replace")
    timing = json.loads(result.read_text()) if result.exists() else {}
    wall = timing.get("wall_s", time.time() - began if began else None)
    row = {
        "id": case.id,
        "category": case.category,
        "traceback": TRACEBACK.search(text) is not None,
        "hang": killed or wall is None or wall > HANG_S,
        "blowup": rusage.ru_maxrss * 1024 > BLOWUP_BYTES or "MemoryError" in text,
        "code_exec": (folder / "canary").exists(),
        "echo": MARKER in text or PASSWD_LINE in text,
        "wall_s": round(wall, 2) if wall is not None else None,
        "peak_rss_mb": round(rusage.ru_maxrss / 1024),
        "code_from": timing.get("simulator"),
        "tail": _tail(text),
    }
    shutil.rmtree(folder, ignore_errors=True)
    return row


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "missing ScriptRunContext" not in line]
    return " | ".join(line[:200] for line in lines[-3:])


def _wait(proc: subprocess.Popen[bytes], started: Path, sigint_after_s: float | None) -> tuple[Any, bool, float | None]:
    """Wait for ``proc`` (SIGINT once ``sigint_after_s`` passed, kill at the hang limit); its rusage."""
    spawn, began, interrupted = time.time(), None, False
    while True:
        pid, _, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = 0
            return rusage, False, began
        now = time.time()
        if began is None and started.exists():
            began = float(started.read_text() or now)
        if sigint_after_s is not None and began and not interrupted and now - began > sigint_after_s:
            os.kill(proc.pid, signal.SIGINT)
            interrupted = True
        if (began and now - began > HANG_S + 1) or now - spawn > HANG_S + 40:
            os.killpg(proc.pid, signal.SIGKILL)
            _, _, rusage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return rusage, True, began
        time.sleep(0.05)


def run_all(repo: Path, jobs: int, only: str | None, limit: int | None, every: int = 1) -> list[dict[str, Any]]:
    """Every case (or those whose id contains ``only``, or every ``every``-th) against ``repo``, ``jobs`` at a time."""
    cases = [c for c in corpus() if only is None or only in c.id or only == c.category][::every]
    cases = cases[:limit] if limit else cases
    scratch = Path(tempfile.mkdtemp(prefix="hostile-"))
    rows: list[dict[str, Any]] = []
    started = time.time()
    try:
        with cf.ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(run_case, c, repo, scratch): c for c in cases}
            for n, fut in enumerate(cf.as_completed(futures), 1):
                row = fut.result()
                rows.append(row)
                flags = [k for k in ("traceback", "hang", "blowup", "code_exec", "echo") if row[k]]
                print(
                    f"[{n}/{len(cases)} {time.time() - started:5.0f}s] {row['id'][:60]:60s} "
                    f"{row['wall_s']}s {row['peak_rss_mb']}MB {' '.join(flags)}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    order = {c.id: i for i, c in enumerate(cases)}
    return sorted(rows, key=lambda r: order[r["id"]])


COUNTS = ("traceback", "hang", "blowup", "code_exec", "echo")
HEADS = ("tracebacks", "hangs > 20 s", "memory > 1.5 GB", "code execution", "echoed contents")


def summary(rows: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """{category: Counter(cases, traceback, hang, ...)} plus a 'total' row."""
    out: dict[str, Counter[str]] = {}
    for row in rows:
        for key in (row["category"], "total"):
            c = out.setdefault(key, Counter())
            c["cases"] += 1
            for name in COUNTS:
                c[name] += bool(row[name])
    return out


def table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """The Markdown before/after table: one row per category, 'before -> after' per count."""
    b, a = summary(before), summary(after)
    lines = ["| category | inputs | " + " | ".join(HEADS) + " |", "|---" * (len(HEADS) + 2) + "|"]
    for cat in [*CATEGORIES, "total"]:
        if cat not in a and cat not in b:
            continue
        cb, ca = b.get(cat, Counter()), a.get(cat, Counter())
        label = "**total**" if cat == "total" else f"{cat}: {CATEGORIES[cat]}"
        cells = [f"{cb[k]} → {ca[k]}" for k in COUNTS]
        lines.append(f"| {label} | {ca['cases'] or cb['cases']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the corpus against a repo, or print the before/after table of two runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=HERE.parents[1], help="checkout to test (default: this one)")
    parser.add_argument("--jobs", type=int, default=2, help="cases at a time (default 2)")
    parser.add_argument("--out", type=Path, help="write every case's scores as JSON")
    parser.add_argument("--only", help="only cases whose id contains this (or this category)")
    parser.add_argument("--limit", type=int, help="only the first N cases")
    parser.add_argument("--every", type=int, default=1, help="only every N-th case (a quick sample)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print the Markdown table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    if args.table:
        print(table(*(json.loads(p.read_text()) for p in args.table)))
        return 0
    if args.list:
        cases = corpus()
        print("\n".join(f"{c.category:8s} {c.id[:100]}" for c in cases))
        print(f"{len(cases)} cases: {dict(Counter(c.category for c in cases))}")
        return 0
    rows = run_all(args.repo.resolve(), args.jobs, args.only, args.limit, args.every)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    total = summary(rows)["total"]
    print(json.dumps({k: total[k] for k in ("cases", *COUNTS)}))
    for row in rows:
        flags = [k for k in COUNTS if row[k]]
        if flags:
            print(f"{row['category']:7s} {row['id'][:70]:70s} {','.join(flags):20s} {row['tail'][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

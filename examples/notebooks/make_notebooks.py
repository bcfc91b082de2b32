"""Write the example notebooks from plain cell lists (keeps the .ipynb reviewable: edit here, re-run).

    python examples/notebooks/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

CAPACITY = [
    (
        "md",
        """# Capacity planning with clustersim

A capacity planner's three questions, answered with the Python API:

1. **Training**: what is the best plan for this model on N GPUs, and what does the trade-off space look like?
2. **Serving**: how many GPUs does it take to meet a latency SLO at the expected traffic, and at what cost per
   million tokens?
3. **Energy and carbon**: what does the choice cost in MWh and tCO2e, how much does a lower clock save, and
   how much does running in low-carbon hours save?

Sizes are kept small so the notebook runs in about a minute on a laptop CPU (CI executes it top to bottom);
raise them for real planning. Every number comes from clustersim's simulators and cost models.""",
    ),
    (
        "code",
        """import plotly.express as px
import plotly.io as pio

from simulator.plansearch import search_training_plans
from simulator.training.simulate import simulate_training

pio.renderers.default = "plotly_mimetype"
GPUS, GPU, MODEL = 64, "h100-sxm5-80gb", "llama3-8b"
""",
    ),
    ("md", "## 1. Training: search every plan of Llama-3 8B on 64 H100"),
    (
        "code",
        """search = search_training_plans(MODEL, num_gpus=GPUS, gpu=GPU, global_batch=512, seq_len=8192, top=5)
print(f"{search.plans_evaluated:,} candidate plans screened, {search.feasible:,} feasible, "
      f"{search.plans_simulated} simulated in {search.wall_s:.1f} s")
for p in search.best:
    r = p.result
    print(f"{p.label():55s} step {r.step_time_s:6.2f} s  {r.tflops_per_gpu:5.0f} TFLOP/s/GPU  "
          f"memory {r.memory_per_gpu_gb.peak:5.1f} GB  energy {r.energy_j['facility'] / 3.6e6:5.2f} kWh/step")""",
    ),
    (
        "code",
        """rows = [
    {"plan": p.label(), "step time (s)": p.result.step_time_s, "peak memory (GB/GPU)": p.result.memory_per_gpu_gb.peak,
     "energy per step (kWh)": p.result.energy_j["facility"] / 3.6e6, "on Pareto front": p in search.pareto}
    for p in search.simulated
]
fig = px.scatter(rows, x="step time (s)", y="peak memory (GB/GPU)", color="on Pareto front", hover_name="plan",
                 size="energy per step (kWh)", title="Simulated plans: time vs memory (size = energy)")
fig.show()""",
    ),
    ("md", "## 2. Serving: the cheapest deployment that meets the SLO at 20 requests/s"),
    (
        "code",
        """from simulator.cli import example_path
from simulator.config import read_yaml
from simulator.plan_serve import plan_serving

base = read_yaml(example_path("serve-llama3-8b-h100.yaml"))  # Llama-3 8B, chat-style SLO: TTFT 1 s, TPOT 50 ms
print("SLO:", base["slo"])
best, shapes = plan_serving(base, rate_per_s=20, tps=[1, 2], policies=("continuous", "chunked"),
                            max_num_seqs=(256,), requests=200)
for s in shapes:
    print(f"TP{s.tp} {s.policy:10s} max {s.max_num_seqs:3d} seqs: {s.replica_capacity_per_s:5.1f} req/s per replica "
          f"-> {s.replicas} replicas, {s.num_gpus} GPUs, ${s.usd_per_hour:.2f}/h")
print(f"\\ncheapest: TP{best.tp} {best.policy} x {best.replicas} replicas ({best.num_gpus} GPUs), "
      f"${best.usd_per_million_output_tokens:.2f} per million output tokens, simulated p99 TTFT "
      f"{best.simulated['ttft_p99_s'] * 1e3:.0f} ms, SLO met by {best.simulated['slo_attainment']:.0%}")""",
    ),
    (
        "code",
        """fig = px.bar([{"shape": f"TP{s.tp} {s.policy}", "$ per hour": s.usd_per_hour,
                "capacity per replica (req/s)": s.replica_capacity_per_s} for s in shapes],
             x="shape", y="$ per hour", hover_data=["capacity per replica (req/s)"],
             title="Cost of each replica shape at 20 req/s")
fig.show()""",
    ),
    ("md", "## 3. Energy and carbon of the training choice"),
    (
        "code",
        """choice = search.best[0]
training = {**choice.training.model_dump(mode="json"), "tokens": 2e10}  # a 20B-token budget
cfg = {"model": MODEL, "cluster": {"gpu": GPU, "num_gpus": GPUS, "node": "dgx-h100"},
       "parallel": choice.parallel.model_dump(), "training": training, "site": {"pue": 1.1, "region": "us"}}
run = simulate_training(cfg)
print(f"20B tokens: {run.time_to_train_days * 24:.1f} h, {run.total_mwh:.2f} MWh, {run.total_tco2e:.2f} tCO2e, "
      f"${run.total_cost_usd:,.0f}; GPU average {run.power['avg_gpu_power_w']:.0f} W")""",
    ),
    (
        "code",
        """from simulator import dvfs

points = dvfs.sweep(cfg, clocks_mhz=[990, 1290, 1590, 1980])
table = dvfs.to_rows(points)
for r in table:
    print(f"{r['value']:6.0f} MHz: step {r['time_s']:.2f} s, GPU {r['avg_gpu_power_w']:.0f} W, "
          f"{r['gpu_mj_per_token']:.1f} mJ/token GPU, {r['facility_energy_j'] / r['work'] * 1e3:.1f} mJ/token facility")
fig = px.line(table, x="ms_per_token", y="gpu_mj_per_token", text="value", markers=True,
              labels={"ms_per_token": "time per token (ms)", "gpu_mj_per_token": "GPU energy per token (mJ)"},
              title="Locked SM clock: energy vs time")
fig.show()""",
    ),
    (
        "code",
        """from pathlib import Path

from simulator.carbon import compare_policies, load_intensity_series

root = Path.cwd()
while not (root / "examples" / "carbon").is_dir() and root != root.parent:
    root = root.parent
series = load_intensity_series(root / "examples" / "carbon" / "synthetic_week.csv")  # SYNTHETIC week, g/kWh
job_h = run.time_to_train_days * 24
power_kw = run.energy_j["facility"] / run.step_time_s / 1e3
plans = compare_policies(series, job_hours=job_h, power_kw=power_kw, deadline_h=72)
for name, plan in plans.items():
    print(f"{name:13s} {plan.kgco2e:8.1f} kgCO2e, saves {plan.saving_kg:6.1f} kg ({plan.saving_pct:4.1f}%)")
best_plan = min(plans.values(), key=lambda p: p.kgco2e)
hours = list(range(len(best_plan.fractions)))
fig = px.bar(x=hours, y=best_plan.fractions, labels={"x": "hour from now", "y": "share of the job's GPUs running"},
             title=f"{best_plan.policy}: when the job runs (grid intensity as a line)")
fig.add_scatter(x=hours, y=[series[h] * 1e3 / 500 for h in hours], name="intensity (g/kWh / 500)")
fig.show()""",
    ),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


if __name__ == "__main__":
    nbformat.write(build(CAPACITY), HERE / "capacity_planning.ipynb")
    print("wrote", HERE / "capacity_planning.ipynb")

"""Training plan search: every parallel plan of a model on a cluster, screened in closed form, the best simulated.

``clustersim plan train MODEL --gpus N --gpu TYPE`` answers "how should I split this job?" (issue #9). The
package, in the order a search runs:

- :mod:`~simulator.search.plan.space`: :class:`SearchSpace` (the values each dimension may take), the
  enumeration's units of work and the integer rules that prune a candidate, each counted under its reason;
- :mod:`~simulator.search.plan.screen`: the closed-form screen (:class:`Screen`): per-layer cost tables,
  stage sums, the step-time and peak-memory estimates, and the loop nest of one (tp, cp) task;
- :mod:`~simulator.search.plan.search`: :func:`search_training_plans`, which screens every task in a pool of
  processes, simulates the short list and reports :class:`PlanResult` s in a :class:`PlanSearchResult`.
"""

from __future__ import annotations

from simulator.search.plan.screen import Screen, SearchContext
from simulator.search.plan.search import (
    PARETO_MAX_SLOWDOWN,
    PARETO_MAX_TASKS,
    PlanResult,
    PlanSearchResult,
    search_training_plans,
)
from simulator.search.plan.space import (
    R_BATCH,
    R_CP_SEQ,
    R_EP,
    R_EP_FIT,
    R_OOM,
    R_PIPE,
    R_PP_LAYERS,
    R_SP,
    R_TP_HEADS,
    R_TP_KV,
    R_VPP_LAYERS,
    R_WORLD,
    R_ZERO,
    RECOMPUTE,
    SCHEDULES,
    PlanKey,
    SearchSpace,
    divisors,
)

__all__ = [
    "PARETO_MAX_SLOWDOWN",
    "PARETO_MAX_TASKS",
    "RECOMPUTE",
    "R_BATCH",
    "R_CP_SEQ",
    "R_EP",
    "R_EP_FIT",
    "R_OOM",
    "R_PIPE",
    "R_PP_LAYERS",
    "R_SP",
    "R_TP_HEADS",
    "R_TP_KV",
    "R_VPP_LAYERS",
    "R_WORLD",
    "R_ZERO",
    "SCHEDULES",
    "PlanKey",
    "PlanResult",
    "PlanSearchResult",
    "Screen",
    "SearchContext",
    "SearchSpace",
    "divisors",
    "search_training_plans",
]

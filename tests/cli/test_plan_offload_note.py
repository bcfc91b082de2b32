"""`clustersim plan train` says what ``offload:NAME`` in a plan label means when plans fit only with offload."""

from __future__ import annotations

from simulator.cli.search import format_search
from simulator.search.plan import search_training_plans


def test_plan_report_explains_offload_labels_only_when_plans_use_offload() -> None:
    kw = {"gpu": "a100-sxm4-80gb", "global_batch": 4, "seq_len": 2048, "workers": 1, "top_k": 2, "pareto_k": 2}
    text = format_search(search_training_plans("llama2-13b", num_gpus=1, **kw))  # 13B fits one GPU only offloaded
    assert "offload:optimizer" in text
    assert "every simulated plan uses it (the search adds offload when no plan fits in GPU memory alone)" in text
    small = format_search(search_training_plans("llama3.2-1b", num_gpus=1, **kw))
    assert "offload:" not in small

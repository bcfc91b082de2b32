"""What a GPU lets a process use: facts shared by the training and serving memory models."""

from __future__ import annotations

from hwmodels.catalogue import get_gpu

__all__ = ["RUNTIME_OVERHEAD_BYTES", "USABLE_FRACTION", "usable_memory_bytes"]

#: CUDA context + library workspaces, outside PyTorch's allocator. An ESTIMATE: the CUDA context takes
#: ~300-500 MB on A100/H100 with CUDA 12 lazy module loading; cuBLAS/cuBLASLt workspaces (PyTorch keeps
#: 4-32 MiB per handle and stream, TransformerEngine its own) and NCCL's per-communicator channel
#: buffers (NCCL_BUFFSIZE 4 MiB x channels x peers, for the TP, PP, DP and EP groups) add a few
#: hundred MB more. 1 GB total.
RUNTIME_OVERHEAD_BYTES = 1.0e9

#: CUDA-visible share of the nominal capacity: torch.cuda reports 79.1787 GiB total on the measured
#: "80GB" H100 SXM5 (/work/shared/data/h100-sxm5-80gb/kernels-2026-11-23.json, meta.mem_gb). Applied to
#: every GPU (an approximation: the reserved share differs a little between products).
USABLE_FRACTION = 79.1787109375 / 80.0


def usable_memory_bytes(gpu_id: str) -> float:
    """Bytes CUDA lets a process use on ``gpu_id``: nominal GiB x the share the H100 measurement saw."""
    return get_gpu(gpu_id).memory_gb * 2**30 * USABLE_FRACTION

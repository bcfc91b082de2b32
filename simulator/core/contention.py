"""Contention between concurrent work on one GPU and its NIC: what overlapping costs.

Two mechanisms, both charged where the training step overlaps communication with other work:

* **NIC sharing.** The gradient sync of a data-parallel group that spans nodes runs during the last
  backward, while the pipeline's own inter-node traffic (stage-to-stage sends, expert all-to-all, context-
  parallel exchange) uses the same NIC. Two flows on one link get max-min fair shares (half each while both
  are active); if the pipeline's traffic holds the NIC a share ``u`` of the time, a bucket reduced then runs
  at ``1 - u/2`` of its bandwidth: :func:`nic_sharing_factor`. (The pipeline's side of the same sharing is
  not charged: its transfers are short and mostly hidden behind compute.)
* **SM interference.** NCCL kernels run on SMs (one CTA per channel) and read and write HBM, so compute that
  overlaps them slows. DeepSeek-V3 (arXiv 2412.19437, sec. 3.2.2) reports that 20 SMs are enough to drive IB
  and NVLink at full bandwidth: :data:`COMM_SMS`. Compute overlapping a collective loses ``COMM_SMS / SMs``
  of its throughput (:func:`overlap_interference_s`); where the run already reserves SMs for communication
  (``training.comm_sms``, DeepSeek-V3's setting) that cost is in the compute already and nothing is added.
"""

from __future__ import annotations

__all__ = ["COMM_SMS", "nic_sharing_factor", "overlap_interference_s"]

#: SMs that communication kernels occupy while they move data at full link bandwidth (DeepSeek-V3 report,
#: sec. 3.2.2: "only 20 SMs are sufficient to fully utilize the bandwidths of IB and NVLink").
COMM_SMS = 20


def nic_sharing_factor(busy_share: float) -> float:
    """How much longer a transfer takes on a NIC that other traffic holds ``busy_share`` (0-1) of the time:
    max-min fair sharing gives it half the link while both are active, so 1 / (1 - busy_share / 2)."""
    u = min(1.0, max(0.0, busy_share))
    return 1.0 / (1.0 - 0.5 * u)


def overlap_interference_s(reserved_sms: int, sms: int, overlapped_s: float) -> float:
    """Compute seconds lost while communication kernels overlap compute for ``overlapped_s``: they take
    :data:`COMM_SMS` of ``sms`` SMs, unless the run reserves ``reserved_sms`` for them already."""
    if reserved_sms > 0 or sms <= 0 or overlapped_s <= 0:
        return 0.0
    return overlapped_s * min(1.0, COMM_SMS / sms)

"""Paged KV cache of one replica, with host-DRAM and NVMe tiers and an LRU prefix cache.

GPU memory is counted in blocks of ``block_size`` tokens (vLLM's PagedAttention). Finished
conversations can stay cached (prefix caching): their blocks are evictable, least recently used
first, to the host tier, then to NVMe, then dropped. Moving blocks between tiers costs time at the
tier's bandwidth; the engine adds that time to the iteration that caused it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class CachedPrefix:
    """KV of a finished turn kept for the session's next turn."""

    tokens: int
    blocks: int
    tier: str  # gpu | host | nvme


@dataclass
class KVCache:
    """Block accounting for one replica (all of its TP ranks together)."""

    gpu_blocks: int
    block_size: int
    bytes_per_block: float
    host_blocks: int = 0
    nvme_blocks: int = 0
    host_bytes_s: float = 1.0
    nvme_bytes_s: float = 1.0
    gpu_free: int = field(init=False)
    host_free: int = field(init=False)
    nvme_free: int = field(init=False)
    prefixes: OrderedDict[int, CachedPrefix] = field(default_factory=OrderedDict)
    pending_transfer_s: float = 0.0
    peak_used: int = 0
    hits_tokens: int = 0
    lookups_tokens: int = 0

    def __post_init__(self) -> None:
        self.gpu_free = self.gpu_blocks
        self.host_free = self.host_blocks
        self.nvme_free = self.nvme_blocks

    # ---- sizes -----------------------------------------------------------------------------------
    def blocks_for(self, tokens: int) -> int:
        """KV blocks that hold ``tokens`` tokens."""
        return math.ceil(tokens / self.block_size) if tokens > 0 else 0

    @property
    def gpu_used(self) -> int:
        """GPU blocks in use (cached prefixes included)."""
        return self.gpu_blocks - self.gpu_free

    @property
    def cached_gpu_blocks(self) -> int:
        """GPU blocks held by cached prefixes (evictable)."""
        return sum(p.blocks for p in self.prefixes.values() if p.tier == "gpu")

    def _transfer(self, blocks: int, bytes_s: float) -> None:
        self.pending_transfer_s += blocks * self.bytes_per_block / bytes_s

    def take_transfer_s(self) -> float:
        """Transfer time accumulated since the last call (charged to the next iteration)."""
        t, self.pending_transfer_s = self.pending_transfer_s, 0.0
        return t

    # ---- GPU blocks --------------------------------------------------------------------------------
    def allocate(self, blocks: int) -> bool:
        """Take ``blocks`` GPU blocks, evicting cached prefixes (LRU) if needed; False if impossible."""
        if blocks <= 0:
            return True
        while self.gpu_free < blocks:
            if not self._evict_one_gpu_prefix():
                return False
        self.gpu_free -= blocks
        self.peak_used = max(self.peak_used, self.gpu_used)
        return True

    def can_allocate(self, blocks: int) -> bool:
        """Whether ``blocks`` GPU blocks could be taken, evicting cached prefixes if needed."""
        return self.gpu_free + self.cached_gpu_blocks >= blocks

    def free(self, blocks: int) -> None:
        """Return ``blocks`` GPU blocks to the free pool."""
        self.gpu_free += blocks
        assert self.gpu_free <= self.gpu_blocks, "freed more KV blocks than were allocated"

    # ---- swapping (preemption by swap) --------------------------------------------------------------
    def swap_out(self, blocks: int) -> bool:
        """Move a preempted sequence's blocks to host memory; False if the host tier is full."""
        if blocks > self.host_free:
            return False
        self.host_free -= blocks
        self.free(blocks)
        self._transfer(blocks, self.host_bytes_s)
        return True

    def swap_in(self, blocks: int) -> bool:
        """Bring a swapped-out sequence's blocks back from host memory; False if the GPU has no room."""
        if not self.allocate(blocks):
            return False
        self.host_free += blocks
        self._transfer(blocks, self.host_bytes_s)
        return True

    # ---- prefix cache ------------------------------------------------------------------------------
    def store_prefix(self, session: int, tokens: int, blocks: int) -> None:
        """Keep a finished turn's GPU blocks as the session's cached prefix (replacing an older one)."""
        old = self.prefixes.pop(session, None)
        if old is not None:
            self._release(old)
        self.prefixes[session] = CachedPrefix(tokens=tokens, blocks=blocks, tier="gpu")

    def claim_prefix(self, session: int, needed_tokens: int) -> tuple[int, int]:
        """Reuse the session's cached prefix for a new turn needing ``needed_tokens`` of context.

        Returns (hit tokens, GPU blocks now owned by the sequence). A prefix on the host or NVMe
        tier is loaded back (transfer time charged); a miss returns (0, 0).
        """
        self.lookups_tokens += needed_tokens
        p = self.prefixes.pop(session, None)
        if p is None:
            return 0, 0
        hit = min(p.tokens, needed_tokens)
        keep = self.blocks_for(hit)
        if p.tier == "gpu":
            self.gpu_free += p.blocks - keep  # blocks beyond the reused part go back
        else:
            if not self.allocate(keep):
                self._release(p)
                return 0, 0
            self._transfer(keep, self.host_bytes_s if p.tier == "host" else self.nvme_bytes_s)
            self._release(p)
        self.hits_tokens += hit
        return hit, keep

    def _release(self, p: CachedPrefix) -> None:
        if p.tier == "gpu":
            self.gpu_free += p.blocks
        elif p.tier == "host":
            self.host_free += p.blocks
        else:
            self.nvme_free += p.blocks

    def _evict_one_gpu_prefix(self) -> bool:
        """Demote the least recently used GPU prefix to host (or NVMe), or drop it."""
        for session, p in self.prefixes.items():
            if p.tier != "gpu":
                continue
            self.gpu_free += p.blocks
            if self._make_room("host", p.blocks):
                self.host_free -= p.blocks
                p.tier = "host"
                self._transfer(p.blocks, self.host_bytes_s)
            else:
                del self.prefixes[session]
            return True
        return False

    def _make_room(self, tier: str, blocks: int) -> bool:
        """Free ``blocks`` on the host tier by demoting LRU host prefixes to NVMe (or dropping them)."""
        if tier == "host" and blocks > self.host_blocks:
            return False
        while self.host_free < blocks:
            victim = next(((s, p) for s, p in self.prefixes.items() if p.tier == "host"), None)
            if victim is None:
                return False
            s, p = victim
            self.host_free += p.blocks
            if p.blocks <= self.nvme_free or self._drop_nvme(p.blocks):
                self.nvme_free -= p.blocks
                p.tier = "nvme"
                self._transfer(p.blocks, self.nvme_bytes_s)
            else:
                del self.prefixes[s]
        return True

    def _drop_nvme(self, blocks: int) -> bool:
        if blocks > self.nvme_blocks:
            return False
        while self.nvme_free < blocks:
            victim = next(((s, p) for s, p in self.prefixes.items() if p.tier == "nvme"), None)
            if victim is None:
                return False
            self.nvme_free += victim[1].blocks
            del self.prefixes[victim[0]]
        return True

"""The serving engine: a router and replicas as SimPy processes, one batching policy per replica.

Each replica loops: pick the next iteration's work with its batching policy, charge the iteration
cost (:mod:`simulator.serving.iteration`) plus any KV transfer time, advance the clock, then
apply the effects (tokens emitted, requests finished, KV blocks freed). Requests arrive through
the router, which picks a replica per request.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field

import simpy

from hwmodels.errors import ClusterSimError
from simulator.serving.config import RetentionSpec, ServingConfig
from simulator.serving.iteration import IterationModel
from simulator.serving.kv import KVCache
from simulator.serving.policies import RequestLevelBatching
from simulator.serving.workload import Request


def retained_context(req: Request, retention: RetentionSpec | None) -> int:
    """Context tokens kept in the KV cache for this turn under a structured-retention policy.

    Turns at most ``keep_last_turns`` back are kept whole, older ones up to ``drop_after_turns``
    keep ``key_token_fraction`` of their tokens (the most-attended ones), older turns are dropped.
    """
    if retention is None or not req.turn_tokens:
        return req.context_tokens
    kept = 0
    n = len(req.turn_tokens)
    for j, tokens in enumerate(req.turn_tokens):
        age = n - j  # 1 = the previous turn
        if age <= retention.keep_last_turns:
            kept += tokens
        elif age <= retention.drop_after_turns:
            kept += math.ceil(tokens * retention.key_token_fraction)
    return kept


@dataclass(eq=False, slots=True)
class Seq:
    """A request's state on a replica."""

    req: Request
    prompt: int  # tokens whose KV the request needs before decoding (after retention)
    arrival: float
    prefilled: int = 0  # prompt tokens with KV in place
    generated: int = 0
    blocks: int = 0
    host_blocks: int = 0  # KV blocks kept in host memory and streamed per step (offload_decode)
    first_token_s: float | None = None
    done_s: float | None = None
    preemptions: int = 0
    swapped: bool = False
    cached_tokens: int = 0
    recompute: int = 0  # tokens to re-prefill after a recompute preemption (prompt + generated)
    replica: int = -1
    prefill_replica: int = -1
    start_s: float | None = None  # first time the engine scheduled it (end of queueing)
    blocks_swapped: int = 0  # blocks parked in host memory while swapped out

    @property
    def context(self) -> int:
        """Tokens in the KV cache once prefill is complete."""
        return self.prompt + self.generated

    @property
    def to_prefill(self) -> int:
        """Tokens still to prefill (prompt plus any recompute after a preemption)."""
        return self.prompt + self.recompute - self.prefilled

    @property
    def decoding(self) -> bool:
        """True when prefill is done, output tokens remain and the sequence is not swapped out."""
        return self.to_prefill == 0 and self.generated < self.req.output_tokens and not self.swapped


@dataclass
class IterationRecord:
    """One engine iteration on a replica: its span (s), token mix and KV blocks in use afterwards."""

    replica: int
    start: float
    end: float
    prefill_tokens: int
    decodes: int
    kv_used: int
    kv_total: int


@dataclass
class Replica:
    """One model replica (TP x PP GPUs) with its KV cache and queues."""

    index: int
    role: str  # serve | prefill | decode
    model: IterationModel
    kv: KVCache
    env: simpy.Environment
    waiting: deque[Seq] = field(default_factory=deque)
    running: list[Seq] = field(default_factory=list)
    wake: simpy.Event | None = None
    busy_s: float = 0.0
    tensor_s: float = 0.0  # math work per GPU, seconds at full peak (energy)
    hbm_s: float = 0.0  # HBM traffic per GPU, seconds at full bandwidth (energy)
    overhead_s: float = 0.0  # engine CPU time inside busy_s (the GPU idles)
    outstanding: int = 0

    def add_work(self, prefill: list[tuple[int, int]], decodes: int, context: int) -> None:
        """Add one iteration's math and HBM work (and engine overhead) to the replica's totals, for energy."""
        tensor, hbm = self.model.work_totals(prefill, decodes, context)
        self.tensor_s += tensor
        self.hbm_s += hbm
        if self.model.overhead:
            self.overhead_s += self.model.scheduler_s(decodes + len(prefill))

    def notify(self) -> None:
        """Wake the replica's scheduling loop if it is waiting for work."""
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()


class ServingEngine:
    """Runs one serving simulation."""

    def __init__(self, cfg: ServingConfig, model: IterationModel, make_kv, requests: list[Request]) -> None:
        self.cfg = cfg
        self.env = simpy.Environment()
        self.requests = requests
        self.seqs: list[Seq] = []
        self.records: list[IterationRecord] = []
        self.preemptions = 0
        self.max_admitted = 0  # most sequences a replica held at once (decoding, prefilling or swapped out)
        self.kv_link_bytes_s = 0.0
        roles = cfg.batching.replica_roles(cfg.replicas)
        self.replicas = [Replica(i, r, model, make_kv(), self.env) for i, r in enumerate(roles)]
        self._rr = 0

    # ---- router ---------------------------------------------------------------------------------
    def _pick(self, candidates: list[Replica], seq: Seq) -> Replica:
        router = self.cfg.router
        if router == "round_robin":
            rep = candidates[self._rr % len(candidates)]
            self._rr += 1
            return rep
        if router == "kv_aware":
            with_prefix = [r for r in candidates if seq.req.session in r.kv.prefixes]
            if with_prefix:
                return min(with_prefix, key=lambda r: r.outstanding)
            return max(candidates, key=lambda r: (r.kv.gpu_free + r.kv.cached_gpu_blocks, -r.outstanding))
        return min(candidates, key=lambda r: (r.outstanding, r.index))

    def _arrivals(self) -> Generator:
        retention = self.cfg.kv.retention
        entry = [r for r in self.replicas if r.role in ("serve", "prefill")]
        for req in self.requests:
            if req.arrival_s > self.env.now:
                yield self.env.timeout(req.arrival_s - self.env.now)
            ctx = retained_context(req, retention)
            seq = Seq(req=req, prompt=ctx + (req.prompt_tokens - req.context_tokens), arrival=self.env.now)
            self.seqs.append(seq)
            rep = self._pick(entry, seq)
            self._enqueue(rep, seq)

    def _enqueue(self, rep: Replica, seq: Seq) -> None:
        seq.replica = rep.index
        rep.outstanding += 1
        rep.waiting.append(seq)
        rep.notify()

    # ---- KV helpers -----------------------------------------------------------------------------
    def _admit_kv(self, rep: Replica, seq: Seq, tokens: int) -> bool:
        """Make sure ``seq`` holds blocks for ``tokens`` tokens of KV (allocating the difference).

        With ``kv.offload_decode`` the part that does not fit in HBM goes to the host tier.
        """
        need = rep.kv.blocks_for(tokens) - seq.blocks - seq.host_blocks
        if need <= 0:
            return True
        if rep.kv.allocate(need):
            seq.blocks += need
            return True
        if self.cfg.kv.offload_decode and rep.kv.host_free >= need:
            rep.kv.host_free -= need
            seq.host_blocks += need
            return True
        return False

    def _claim_prefix(self, rep: Replica, seq: Seq) -> None:
        if not self.cfg.kv.prefix_caching or seq.req.session < 0 or seq.prefilled or seq.blocks:
            return
        context = seq.prompt - (seq.req.prompt_tokens - seq.req.context_tokens)
        hit, blocks = rep.kv.claim_prefix(seq.req.session, context)
        seq.cached_tokens, seq.prefilled, seq.blocks = hit, hit, blocks

    def _release(self, rep: Replica, seq: Seq) -> None:
        rep.kv.host_free += seq.host_blocks
        seq.host_blocks = 0
        if self.cfg.kv.prefix_caching and seq.req.session >= 0 and seq.done_s is not None:
            rep.kv.store_prefix(seq.req.session, seq.context, seq.blocks)
        else:
            rep.kv.free(seq.blocks)
        seq.blocks = 0

    def _preempt(self, rep: Replica) -> bool:
        """Evict the most recently admitted running sequence (vLLM's policy); False if none."""
        victims = [s for s in rep.running if not s.swapped]
        if len(victims) <= 1:
            return False
        victim = victims[-1]
        self.preemptions += 1
        victim.preemptions += 1
        if self.cfg.kv.preemption == "swap" and rep.kv.swap_out(victim.blocks):
            victim.swapped = True
            victim.blocks_swapped = victim.blocks
            victim.blocks = 0
            return True
        rep.kv.free(victim.blocks)
        rep.kv.host_free += victim.host_blocks
        victim.blocks = victim.host_blocks = 0
        victim.recompute = victim.generated
        victim.prefilled = 0
        rep.running.remove(victim)
        rep.waiting.appendleft(victim)
        return True

    def _grow_decodes(self, rep: Replica, decodes: list[Seq]) -> list[Seq]:
        """Give every decoding sequence room for its next token, preempting when the cache is full."""
        ok: list[Seq] = []
        size = rep.kv.block_size
        preempted = False
        for seq in decodes:
            if seq.swapped or seq.blocks + seq.host_blocks == 0 and seq.to_prefill:
                continue
            if preempted and seq not in rep.running:  # only after a preemption can a sequence have left
                continue
            if seq.context + 1 <= (seq.blocks + seq.host_blocks) * size:  # room in its last block
                ok.append(seq)
                continue
            while not self._admit_kv(rep, seq, seq.context + 1):
                if not self._preempt(rep):
                    break
                preempted = True
            if (seq.blocks + seq.host_blocks) * size >= seq.context + 1 and not seq.swapped and seq in rep.running:
                ok.append(seq)
        if preempted:
            ok = [s for s in ok if s in rep.running and not s.swapped]
        return ok

    @staticmethod
    def _decoding(rep: Replica) -> list[Seq]:
        return [
            s
            for s in rep.running
            if not s.swapped and s.prefilled >= s.prompt + s.recompute and s.generated < s.req.output_tokens
        ]

    def _resume_swapped(self, rep: Replica) -> None:
        for seq in [s for s in rep.running if s.swapped]:
            blocks = seq.blocks_swapped
            if rep.kv.swap_in(blocks):
                seq.swapped = False
                seq.blocks = blocks
            else:
                break

    # ---- batch builders the policies (simulator.serving.policies) call: (prefill [(seq, chunk)], decodes) ----
    def continuous_batch(self, rep: Replica, max_seqs: int, max_tokens: int) -> tuple[list, list]:
        """Orca/vLLM iteration: admit whole prompts (prefill-only iterations first), else grow the decodes."""
        self._resume_swapped(rep)
        admitted: list[tuple[Seq, int]] = []
        tokens = 0
        while rep.waiting and len(rep.running) + len(admitted) < max_seqs:
            seq = rep.waiting[0]
            self._claim_prefix(rep, seq)
            chunk = seq.to_prefill
            if chunk == 0:  # arrived with its KV (disaggregated decode pool): only needs blocks
                if not self._admit_kv(rep, seq, seq.context + 1):
                    break
                rep.waiting.popleft()
                rep.running.append(seq)
                continue
            if admitted and tokens + chunk > max_tokens:
                break
            if not self._admit_kv(rep, seq, seq.prompt + seq.recompute + 1):
                break
            rep.waiting.popleft()
            admitted.append((seq, chunk))
            tokens += chunk
            seq.start_s = self.env.now if seq.start_s is None else seq.start_s
        if admitted:  # vLLM without chunked prefill runs prefill-only iterations first
            rep.running.extend(s for s, _ in admitted)
            return admitted, []
        return [], self._grow_decodes(rep, self._decoding(rep))

    def chunked_batch(self, rep: Replica, max_seqs: int, token_budget: int) -> tuple[list, list]:
        """Sarathi-Serve iteration: every decode, then prompt chunks filling the rest of ``token_budget``."""
        self._resume_swapped(rep)
        decodes = self._grow_decodes(rep, self._decoding(rep)[:max_seqs])
        budget = token_budget - len(decodes)
        prefill: list[tuple[Seq, int]] = []
        partial = [s for s in rep.running if s.to_prefill > 0 and not s.swapped]
        for seq in partial:
            if budget <= 0:
                break
            chunk = min(seq.to_prefill, budget)
            if not self._admit_kv(rep, seq, seq.prefilled + chunk + (1 if chunk == seq.to_prefill else 0)):
                break
            prefill.append((seq, chunk))
            budget -= chunk
        while budget > 0 and rep.waiting and len(rep.running) < max_seqs:
            seq = rep.waiting[0]
            self._claim_prefix(rep, seq)
            chunk = min(seq.to_prefill, budget)
            if not self._admit_kv(rep, seq, seq.prefilled + chunk + (1 if chunk == seq.to_prefill else 0)):
                break
            rep.waiting.popleft()
            rep.running.append(seq)
            prefill.append((seq, chunk))
            budget -= chunk
            seq.start_s = self.env.now if seq.start_s is None else seq.start_s
        return prefill, decodes

    # ---- the replica process ----------------------------------------------------------------------
    def _replica(self, rep: Replica) -> Generator:
        policy = self.cfg.batching
        while True:
            if not rep.waiting and not rep.running:
                rep.wake = self.env.event()
                yield rep.wake
                continue
            yield from policy.step(self, rep)

    def run_batch(self, rep: Replica, prefill: list[tuple[Seq, int]], decodes: list[Seq]) -> Generator:
        """Run one iteration of ``prefill`` chunks and ``decodes``; with nothing to run, wait for a change."""
        if prefill or decodes:
            yield from self._run_iteration(rep, prefill, decodes)
            return
        if rep.running and not rep.waiting and all(s.swapped for s in rep.running):
            raise ClusterSimError("KV cache cannot hold even one swapped-in sequence; raise kv memory")
        if not rep.running:
            self._unfittable(rep)
        rep.wake = self.env.event()
        yield rep.wake

    def _unfittable(self, rep: Replica) -> None:
        seq = rep.waiting[0]
        raise ClusterSimError(
            f"request {seq.req.id} needs {rep.kv.blocks_for(seq.prompt + seq.recompute + 1)} KV blocks but the replica "
            f"has {rep.kv.gpu_blocks}; use more tensor parallelism, fp8/int4 KV, or shorter prompts"
        )

    def _run_iteration(self, rep: Replica, prefill: list[tuple[Seq, int]], decodes: list[Seq]) -> Generator:
        chunks = [(c, s.prefilled) for s, c in prefill]
        samples = len(decodes) + sum(1 for s, c in prefill if c == s.to_prefill)
        self.max_admitted = max(self.max_admitted, len(rep.running))
        context = sum([s.prompt + s.generated for s in decodes])
        t = rep.model.time_totals(chunks, len(decodes), context, samples) + rep.kv.take_transfer_s()
        rep.add_work(chunks, len(decodes), context)
        offloaded = sum(s.host_blocks for s in decodes)
        if offloaded:  # host-resident KV crosses PCIe once per decode step
            t += offloaded * rep.kv.bytes_per_block / rep.kv.host_bytes_s
        yield from self._timed(rep, t, sum(c for _, c in prefill), len(decodes))
        now = self.env.now
        for seq, chunk in prefill:
            seq.prefilled += chunk
            if seq.to_prefill == 0:
                if seq.recompute:  # a recompute rebuilt the KV of tokens already emitted
                    seq.recompute, seq.prefilled = 0, seq.prompt
                elif seq.generated == 0:
                    self._emit(rep, seq, now)
        if rep.role == "prefill":
            for seq in decodes:
                self._emit(rep, seq, now)
            return
        for seq in decodes:  # hot path of decode iterations: inline of _emit
            seq.generated += 1
            if seq.generated >= seq.req.output_tokens:
                seq.done_s = now
                rep.running.remove(seq)
                rep.outstanding -= 1
                self._release(rep, seq)

    def _emit(self, rep: Replica, seq: Seq, now: float) -> None:
        if seq.first_token_s is None:
            seq.first_token_s = now
        seq.generated += 1
        if rep.role == "prefill":
            self._handoff(rep, seq)
            return
        if seq.generated >= seq.req.output_tokens:
            seq.done_s = now
            rep.running.remove(seq)
            rep.outstanding -= 1
            self._release(rep, seq)

    # ---- disaggregated hand-off ------------------------------------------------------------------
    def _handoff(self, rep: Replica, seq: Seq) -> None:
        rep.running.remove(seq)
        rep.outstanding -= 1
        blocks = seq.blocks
        rep.kv.free(seq.blocks)
        seq.blocks = 0
        seq.prefill_replica = rep.index
        if seq.generated >= seq.req.output_tokens:
            seq.done_s = self.env.now
            return
        self.env.process(self._transfer(seq, blocks * rep.kv.bytes_per_block))

    def _transfer(self, seq: Seq, nbytes: float) -> Generator:
        yield self.env.timeout(nbytes / self.kv_link_bytes_s)
        decode = [r for r in self.replicas if r.role == "decode"]
        rep = self._pick(decode, seq)
        seq.prefilled = seq.prompt  # arrives with its KV
        self._enqueue(rep, seq)

    # ---- static and bucketed batching -----------------------------------------------------------
    def static_batch(self, rep: Replica, pol: RequestLevelBatching) -> Generator:
        """Form a request-level batch, prefill it padded to its longest prompt and decode it to the end."""
        batch, reserved = self._form_batch(rep, pol)
        if not batch:
            oldest = min(s.arrival for s in rep.waiting)
            deadline = oldest + pol.max_wait_s
            rep.wake = self.env.event()
            yield simpy.AnyOf(self.env, [rep.wake, self.env.timeout(max(0.0, deadline - self.env.now) + 1e-9)])
            return
        max_prompt = max(s.prompt for s in batch)
        max_out = max(s.req.output_tokens for s in batch)
        for s in batch:
            rep.waiting.remove(s)
            rep.running.append(s)
            s.start_s = self.env.now
        # the whole batch is padded to its longest prompt, and decodes until its longest answer is done
        yield from self._timed(
            rep, self._static_step(rep, [(max_prompt, 0)] * len(batch), [], len(batch)), max_prompt * len(batch), 0
        )
        for s in batch:
            s.prefilled = s.prompt
            self._emit(rep, s, self.env.now)
        for step in range(1, max_out):
            t = self._static_step(rep, [], [max_prompt + step] * len(batch), len(batch))
            yield from self._timed(rep, t, 0, len(batch))
            for s in batch:
                if s.generated < s.req.output_tokens:
                    self._emit(rep, s, self.env.now)
        rep.kv.free(reserved)

    def _static_step(self, rep: Replica, prefill: list[tuple[int, int]], contexts: list[int], samples: int) -> float:
        rep.add_work(prefill, len(contexts), sum(contexts))
        return rep.model.time(prefill, contexts, samples)

    def _timed(self, rep: Replica, t: float, prefill_tokens: int, decodes: int) -> Generator:
        start = self.env.now
        yield self.env.timeout(t)
        rep.busy_s += t
        self.records.append(
            IterationRecord(rep.index, start, self.env.now, prefill_tokens, decodes, rep.kv.gpu_used, rep.kv.gpu_blocks)
        )

    def _form_batch(self, rep: Replica, pol: RequestLevelBatching) -> tuple[list[Seq], int]:
        """Pick the next static batch, reserving KV for every member's padded full length."""
        now = self.env.now
        size, minimum = pol.size_limits
        for group in pol.groups(list(rep.waiting)):
            if len(group) >= minimum or (group and now - group[0].arrival >= pol.max_wait_s - 1e-12):
                batch = group[:size]
                while batch:
                    max_len = max(s.prompt for s in batch) + max(s.req.output_tokens for s in batch)
                    need = len(batch) * rep.kv.blocks_for(max_len)
                    if rep.kv.allocate(need):
                        return batch, need
                    batch = batch[:-1]
                self._unfittable(rep)
        return [], 0

    # ---- run ----------------------------------------------------------------------------------------
    def run(self) -> list[Seq]:
        """Simulate every request to completion and return their final states."""
        self.env.process(self._arrivals())
        for rep in self.replicas:
            self.env.process(self._replica(rep))
        self.env.run()
        unfinished = [s for s in self.seqs if s.done_s is None]
        if unfinished or len(self.seqs) != len(self.requests):
            raise RuntimeError(f"serving simulation ended with {len(unfinished)} unfinished requests")
        return self.seqs

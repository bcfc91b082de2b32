"""The serving engine: a router and replicas as SimPy processes, one batching policy per replica.

Each replica loops: pick the next iteration's work with its batching policy, charge the iteration
cost (:mod:`simulator.serving.iteration`) plus any KV transfer time, advance the clock, then
apply the effects (tokens emitted, requests finished, KV blocks freed). Requests arrive through
the router, which picks a replica per request.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from heapq import heappush
from itertools import accumulate

import numpy as np
import simpy
from simpy.events import NORMAL

from hwmodels.errors import ClusterSimError
from simulator.serving.config import ConcurrencyArrivals, RetentionSpec, ServingConfig
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


# SGLang's admission reserve (python/sglang/srt/managers/scheduler.py + schedule_policy.py PrefillAdder, global
# config defaults): a new request is admitted only if the free KV tokens cover its prompt plus new_token_ratio x
# its output, after reserving new_token_ratio x the remaining output of every running request; the ratio starts
# at 0.7, decays by (0.7 - 0.7 x 0.14) / 600 per decode step to 0.7 x 0.14, and jumps back after a retraction to
# (decoded + 20 x running) / (their total output). Output estimates are clipped at 4,096 tokens.
RETRACT_INIT_TOKEN_RATIO = 0.7
RETRACT_MIN_TOKEN_RATIO = 0.7 * 0.14
RETRACT_RATIO_DECAY = (RETRACT_INIT_TOKEN_RATIO - RETRACT_MIN_TOKEN_RATIO) / 600
RETRACT_DECODE_STEPS = 20
RETRACT_CLIP_OUTPUT = 4096


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


class IterationLog:
    """Every iteration's :class:`IterationRecord` as compact typed columns: 36 bytes an iteration instead of a
    Python object of about 200, so a million-request run (millions of iterations) keeps its history in a few
    hundred MB."""

    COLUMNS = ("replica", "start", "end", "prefill_tokens", "decodes", "kv_used", "kv_total")

    def __init__(self) -> None:
        self.replica, self.start, self.end = array("i"), array("d"), array("d")
        self.prefill_tokens, self.decodes, self.kv_used, self.kv_total = array("i"), array("i"), array("i"), array("i")

    def append(
        self, replica: int, start: float, end: float, prefill_tokens: int, decodes: int, kv_used: int, kv_total: int
    ) -> None:
        """Add one iteration."""
        self.replica.append(replica)
        self.start.append(start)
        self.end.append(end)
        self.prefill_tokens.append(prefill_tokens)
        self.decodes.append(decodes)
        self.kv_used.append(kv_used)
        self.kv_total.append(kv_total)

    def extend(
        self, replica: int, starts: list[float], ends: list[float], decodes: int, kv_used: list[int], kv_total: int
    ) -> None:
        """Add decode-only iterations of one replica, all of ``decodes`` sequences."""
        k = len(starts)
        self.replica.extend([replica] * k)
        self.start.extend(starts)
        self.end.extend(ends)
        self.prefill_tokens.extend([0] * k)
        self.decodes.extend([decodes] * k)
        self.kv_used.extend(kv_used)
        self.kv_total.extend([kv_total] * k)

    def __len__(self) -> int:
        return len(self.start)

    def __iter__(self) -> Iterator[IterationRecord]:
        cols = [getattr(self, c) for c in self.COLUMNS]
        return (IterationRecord(*row) for row in zip(*cols, strict=True))

    def column(self, name: str) -> np.ndarray:
        """One column as a numpy array (a copy)."""
        return np.array(getattr(self, name))


class _Environment(simpy.Environment):
    """SimPy's environment with a timeout at an absolute time, so a run of iterations advanced at once ends at
    exactly the float the one-by-one timeouts would have reached (``now + delay`` rounds)."""

    def timeout_at(self, when: float) -> simpy.Event:
        """An event that fires at ``when`` (>= now), scheduled as a :class:`simpy.Timeout` is."""
        event = simpy.Event(self)
        event._ok, event._value = True, None  # triggered, like Timeout.__init__ (simpy 4 internals)
        heappush(self._queue, (when, NORMAL, next(self._eid), event))
        return event

    def peek_except(self, event: simpy.Event | None) -> float:
        """Time of the next scheduled event other than ``event`` (``inf`` when there is none)."""
        queue = self._queue
        if not queue:
            return math.inf
        if queue[0][3] is not event:
            return queue[0][0]
        return min((queue[i][0] for i in (1, 2) if i < len(queue)), default=math.inf)  # a heap's next smallest


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
    token_ratio: float = RETRACT_INIT_TOKEN_RATIO  # SGLang's new_token_ratio (preemption "retract")

    def add_work(self, prefill: list[tuple[int, int]], decodes: int, context: int, idle_s: float | None = None) -> None:
        """Add one iteration's math and HBM work and the CPU time the GPU waited for (default: the whole
        scheduler step) to the replica's totals, for energy."""
        tensor, hbm = self.model.work_totals(prefill, decodes, context)
        self.tensor_s += tensor
        self.hbm_s += hbm
        if idle_s is not None:
            self.overhead_s += idle_s
        elif self.model.overhead:
            self.overhead_s += self.model.scheduler_s(decodes + len(prefill))

    def notify(self) -> None:
        """Wake the replica's scheduling loop if it is waiting for work."""
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()


class ServingEngine:
    """Runs one serving simulation."""

    def __init__(self, cfg: ServingConfig, model: IterationModel, make_kv, requests: list[Request]) -> None:
        self.cfg = cfg
        self.env = _Environment()
        self.requests = requests
        self.seqs: list[Seq] = []
        self.records = IterationLog()
        self.preemptions = 0
        self.max_admitted = 0  # most sequences a replica held at once (decoding, prefilling or swapped out)
        self.kv_link_bytes_s = 0.0
        roles = cfg.batching.replica_roles(cfg.replicas)
        self.replicas = [Replica(i, r, model, make_kv(), self.env) for i, r in enumerate(roles)]
        self._rr = 0
        engine = cfg.stack.serving
        self.preemption = engine.preemption if engine is not None else "lifo"
        arrivals = cfg.workload.arrivals
        # closed loop: at most this many requests in flight, the next one sent when one completes
        self.max_in_flight = arrivals.max_concurrency if isinstance(arrivals, ConcurrencyArrivals) else None
        self.in_flight = 0
        self._client_free: simpy.Event | None = None
        # the open-loop arrival process's pending wake-up, and when its request reaches a replica
        self._arrival: simpy.Event | None = None
        self._arrival_reach = math.inf

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
        limit = self.max_in_flight
        engine = self.cfg.stack.serving
        frontend = engine.frontend_s if engine is not None else 0.0
        for req in self.requests:
            if req.arrival_s > self.env.now:
                delay = req.arrival_s - self.env.now
                timeout = self.env.timeout(delay)
                if limit is None:  # the wake-up itself touches no replica: its request reaches one `frontend` later
                    self._arrival, self._arrival_reach = timeout, self.env.now + delay + frontend
                yield timeout
            if limit is not None:
                while self.in_flight >= limit:
                    self._client_free = self.env.event()
                    yield self._client_free
                self.in_flight += 1
                if req.arrival_s != self.env.now:  # latencies count from when the client sends it
                    req = replace(req, arrival_s=self.env.now)
            ctx = retained_context(req, retention)
            seq = Seq(req=req, prompt=ctx + (req.prompt_tokens - req.context_tokens), arrival=self.env.now)
            self.seqs.append(seq)
            if frontend > 0:  # the request reaches the engine after its API-server path
                self.env.timeout(frontend).callbacks.append(lambda _, s=seq: self._enqueue(self._pick(entry, s), s))
            else:
                self._enqueue(self._pick(entry, seq), seq)
        self._arrival, self._arrival_reach = None, math.inf

    def _completed(self) -> None:
        """A request finished: in a closed loop its client sends the next one."""
        self.in_flight -= 1
        if self._client_free is not None and not self._client_free.triggered:
            self._client_free.succeed()

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

    def _admit_new(self, rep: Replica, seq: Seq, tokens: int) -> bool:
        """Admit a waiting sequence with KV for ``tokens`` tokens, under the engine's admission rule: vLLM takes
        whatever fits now; TRT-LLM's GUARANTEED_NO_EVICT reserves the KV of every token to the last one; SGLang
        keeps a reserve for the running requests' expected output (:data:`RETRACT_INIT_TOKEN_RATIO`)."""
        if self.preemption == "no_evict":
            tokens = max(tokens, seq.prompt + seq.req.output_tokens)
        elif self.preemption == "retract" and not self._reserve_fits(rep, seq, self._reserve_free(rep)):
            return False
        return self._admit_kv(rep, seq, tokens)

    @staticmethod
    def _reserve_free(rep: Replica) -> float:
        """KV tokens free for new requests after SGLang's reserve for the running ones' remaining output."""
        ratio = rep.token_ratio
        reserved = sum(
            min(s.req.output_tokens - s.generated, RETRACT_CLIP_OUTPUT) for s in rep.running if not s.swapped
        )
        return (rep.kv.gpu_free + rep.kv.cached_gpu_blocks) * rep.kv.block_size - ratio * reserved

    @staticmethod
    def _reserve_need(rep: Replica, seq: Seq) -> float:
        return seq.to_prefill + rep.token_ratio * min(seq.req.output_tokens - seq.generated, RETRACT_CLIP_OUTPUT)

    def _reserve_fits(self, rep: Replica, seq: Seq, free: float) -> bool:
        return self._reserve_need(rep, seq) <= free

    def _preempt(self, rep: Replica) -> Seq | None:
        """Evict a running sequence to free KV. vLLM (and TRT-LLM MAX_UTILIZATION) evict
        the most recently admitted one and put it first in the queue; SGLang retracts the one with the fewest
        decoded tokens (the longest prompt among equals) to the back of the queue and raises its reserve. Returns
        the victim (swapped out, or out of the running list), None if none can go."""
        victims = [s for s in rep.running if not s.swapped]
        if len(victims) <= 1:
            return None
        retract = self.preemption == "retract"
        victim = min(victims, key=lambda s: (s.generated, -s.prompt)) if retract else victims[-1]
        self.preemptions += 1
        victim.preemptions += 1
        if retract:
            rest = [s for s in victims if s is not victim]
            decoded = sum(s.generated for s in rest)
            total = sum(s.req.output_tokens for s in rest) or 1
            rep.token_ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(rest)) / total)
        elif self.cfg.kv.preemption == "swap" and rep.kv.swap_out(victim.blocks):
            victim.swapped = True
            victim.blocks_swapped = victim.blocks
            victim.blocks = 0
            return victim
        rep.kv.free(victim.blocks)
        rep.kv.host_free += victim.host_blocks
        victim.blocks = victim.host_blocks = 0
        victim.recompute = victim.generated
        victim.prefilled = 0
        rep.running.remove(victim)
        if retract:
            rep.waiting.append(victim)
        else:
            rep.waiting.appendleft(victim)
        return victim

    def _grow_decodes(self, rep: Replica, decodes: list[Seq]) -> list[Seq]:
        """Give every decoding sequence room for its next token, preempting when the cache is full."""
        ok: list[Seq] = []
        size = rep.kv.block_size
        victims: set[int] = set()  # ids of the sequences preempted here (swapped out, or gone from the running list)
        for seq in decodes:
            if not victims and seq.prompt + seq.generated < (seq.blocks + seq.host_blocks) * size and not seq.swapped:
                ok.append(seq)  # hot path: room in its last block
                continue
            if seq.swapped or seq.blocks + seq.host_blocks == 0 and seq.to_prefill:
                continue
            if id(seq) in victims:  # only after a preemption can a sequence have left
                continue
            if seq.context + 1 <= (seq.blocks + seq.host_blocks) * size:  # room in its last block
                ok.append(seq)
                continue
            while not self._admit_kv(rep, seq, seq.context + 1):
                victim = self._preempt(rep)
                if victim is None:
                    break
                victims.add(id(victim))
            if (seq.blocks + seq.host_blocks) * size >= seq.context + 1 and not seq.swapped and id(seq) not in victims:
                ok.append(seq)
        if victims:
            ok = [s for s in ok if id(s) not in victims]
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
            if not self._admit_new(rep, seq, seq.prompt + seq.recompute + 1):
                break
            rep.waiting.popleft()
            admitted.append((seq, chunk))
            tokens += chunk
            seq.start_s = self.env.now if seq.start_s is None else seq.start_s
        if admitted:  # vLLM without chunked prefill runs prefill-only iterations first
            rep.running.extend(s for s, _ in admitted)
            return admitted, []
        return [], self._grow_decodes(rep, self._decoding(rep))

    def chunked_batch(
        self, rep: Replica, max_seqs: int, token_budget: int, chunk_prompts: bool = True
    ) -> tuple[list, list]:
        """Sarathi-Serve / vLLM V1 iteration: every decode, then prompt chunks filling the rest of ``token_budget``
        (without ``chunk_prompts`` only whole prompts join, as TRT-LLM's in-flight batching without chunked
        context; a prompt longer than the whole budget runs alone with the decodes)."""
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
            if not chunk_prompts and chunk < seq.to_prefill:
                if prefill or seq.to_prefill <= token_budget:
                    break
                chunk = seq.to_prefill
            if not self._admit_new(rep, seq, seq.prefilled + chunk + (1 if chunk == seq.to_prefill else 0)):
                break
            rep.waiting.popleft()
            rep.running.append(seq)
            prefill.append((seq, chunk))
            budget -= chunk
            seq.start_s = self.env.now if seq.start_s is None else seq.start_s
        return prefill, decodes

    def prefill_first_batch(self, rep: Replica, max_seqs: int, chunk_size: int) -> tuple[list, list]:
        """SGLang iteration: a prefill-only batch of up to ``chunk_size`` prompt tokens (the partially prefilled
        request first) whenever prompts wait and fit, else one decode step for every running request."""
        self._resume_swapped(rep)
        prefill: list[tuple[Seq, int]] = []
        budget = chunk_size
        for seq in rep.running:
            if budget <= 0:
                break
            if seq.to_prefill > 0 and not seq.swapped:
                chunk = min(seq.to_prefill, budget)
                if not self._admit_kv(rep, seq, seq.prefilled + chunk + (1 if chunk == seq.to_prefill else 0)):
                    break
                prefill.append((seq, chunk))
                budget -= chunk
        retract = self.preemption == "retract"
        free = self._reserve_free(rep) if retract and rep.waiting else 0.0
        while budget > 0 and rep.waiting and len(rep.running) < max_seqs:
            seq = rep.waiting[0]
            self._claim_prefix(rep, seq)
            chunk = min(seq.to_prefill, budget)
            tokens = seq.prefilled + chunk + (1 if chunk == seq.to_prefill else 0)
            if retract:
                need = self._reserve_need(rep, seq)
                if need > free or not self._admit_kv(rep, seq, tokens):
                    break
                free -= need
            elif not self._admit_new(rep, seq, tokens):
                break
            rep.waiting.popleft()
            rep.running.append(seq)
            prefill.append((seq, chunk))
            budget -= chunk
            seq.start_s = self.env.now if seq.start_s is None else seq.start_s
        if prefill:
            return prefill, []
        rep.token_ratio = max(RETRACT_MIN_TOKEN_RATIO, rep.token_ratio - RETRACT_RATIO_DECAY)
        return [], self._grow_decodes(rep, self._decoding(rep)[:max_seqs])

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
        """Run one iteration of ``prefill`` chunks and ``decodes``; with nothing to run, wait for a change.

        The decode-only iterations that follow with nothing else happening are advanced at once
        (:meth:`_fast_forward`), when the policy's decode steps allow it."""
        if prefill or decodes:
            yield from self._run_iteration(rep, prefill, decodes)
            while (yield from self._fast_forward(rep)):
                pass
            return
        if rep.running and not rep.waiting and all(s.swapped for s in rep.running):
            raise ClusterSimError("KV cache cannot hold even one swapped-in sequence; raise kv memory")
        if not rep.running:
            self._unfittable(rep)
        rep.wake = self.env.event()
        yield rep.wake

    def multi_step(self, rep: Replica, decodes: list[Seq], steps: int) -> Generator:
        """Run up to ``steps`` more decode steps of the same batch without scheduling (no CPU step, no new
        prompts); sequences that finish or lose their KV drop out."""
        for _ in range(steps):
            decodes = self._grow_decodes(rep, [s for s in decodes if s.decoding])
            if not decodes:
                return
            yield from self._run_iteration(rep, [], decodes, scheduled=False)

    def admission_blocked(
        self,
        rep: Replica,
        max_seqs: int,
        token_budget: int | None = None,
        chunk_prompts: bool = True,
        full_only: bool = False,
    ) -> bool:
        """Whether no waiting request can join ``rep``'s running sequences (all decoding) during a run of decode
        steps: none waits or the batch is at ``max_seqs``, or -- unless ``full_only`` -- the queue's head needs
        more KV blocks than are free now (decode steps only take blocks, so it stays blocked). ``token_budget``:
        the chunked-prefill budget of :meth:`chunked_batch` (with ``chunk_prompts``); None: whole prompts, as
        :meth:`continuous_batch` admits them. False whenever it cannot tell (prefix caching, host offload,
        SGLang's reserve, evictable prefixes)."""
        n = len(rep.running)
        if n > max_seqs:
            return False
        if not rep.waiting or n >= max_seqs:
            return True
        kv_cfg = self.cfg.kv
        if full_only or self.preemption == "retract" or kv_cfg.prefix_caching or kv_cfg.offload_decode:
            return False
        if rep.kv.prefixes:
            return False
        seq = rep.waiting[0]
        to_prefill = seq.to_prefill
        if token_budget is None:
            tokens = seq.context + 1 if to_prefill == 0 else seq.prompt + seq.recompute + 1
        else:
            budget = token_budget - n
            if budget <= 0:
                return True
            chunk = min(to_prefill, budget)
            if not chunk_prompts and chunk < to_prefill:
                if to_prefill <= token_budget:
                    return True  # it waits for a budget it fits in whole
                chunk = to_prefill
            tokens = seq.prefilled + chunk + (1 if chunk == to_prefill else 0)
        if self.preemption == "no_evict" and to_prefill:
            tokens = max(tokens, seq.prompt + seq.req.output_tokens)
        return rep.kv.blocks_for(tokens) - seq.blocks - seq.host_blocks > rep.kv.gpu_free

    def _fast_forward(self, rep: Replica) -> Generator[simpy.Event, None, bool]:
        """Advance the run of decode-only iterations in which nothing but tokens and KV blocks changes, in one go.

        While every running sequence decodes, none finishes before the run's last iteration, no prompt can join
        (the policy's ``quiet_decode``), new KV blocks come from free GPU blocks (no eviction, preemption or host
        tier) and no other event falls before the last iteration starts, each iteration is the one the scheduler
        would build: the same batch, one token each, its context grown by the batch size. The
        iteration times, records, work totals and block allocations are those of the one-by-one loop, in the same
        float order, and any other process that runs during the last iteration sees the same state; only the SimPy
        round trips go. Returns whether it advanced any iteration.
        """
        running = rep.running
        n = len(running)
        policy = self.cfg.batching
        if rep.role == "prefill" or not n or not policy.quiet_decode(self, rep):
            return False
        env, kv = self.env, rep.kv
        horizon, now = min(env.peek_except(self._arrival), self._arrival_reach), env.now
        if now >= horizon or kv.pending_transfer_s:
            return False
        size = kv.block_size
        steps: float = math.inf
        context = 0
        rooms: list[int] = []  # free token slots in each sequence's blocks
        for s in running:
            if s.swapped or s.host_blocks or s.prefilled < s.prompt + s.recompute:
                return False
            tokens = s.prompt + s.generated
            left = s.req.output_tokens - s.generated
            if left < steps:
                steps = left  # up to the iteration in which the first sequences finish
            context += tokens
            rooms.append(s.blocks * size - tokens)
        # each iteration is decided when the previous one ends: stop at the first one starting at the next event
        spans: list[tuple[float, float]] = []
        step_s = rep.model.decode_step_s
        while len(spans) < steps and now < horizon:
            t, idle = step_s(n, context + len(spans) * n)
            spans.append((t, idle))
            now += t
        if now == horizon:  # a tie with an event scheduled during the run: keep SimPy's order by leaving it out
            spans.pop()
        # KV blocks taken at the start of each iteration: a sequence with `room` free slots takes one at
        # iterations room + 1, room + 1 + block_size, ...; the run stops before the free blocks run out
        steps = len(spans)
        new_blocks = [0] * (steps + 1)
        for room in rooms:
            at = room + 1
            while at <= steps:
                new_blocks[at] += 1
                at += size
        taken = list(accumulate(new_blocks))
        while taken[steps] > kv.gpu_free:
            steps -= 1
        if not steps:
            return False
        return (yield from self._advance(rep, spans[:steps], context, rooms, taken, policy.decays_token_ratio))

    def _advance(
        self,
        rep: Replica,
        spans: list[tuple[float, float]],
        context: int,
        rooms: list[int],
        taken: list[int],
        decays_ratio: bool,
    ) -> Generator[simpy.Event, None, bool]:
        """Run the quiet decode iterations ``spans`` (seconds, CPU-wait seconds) of every running sequence (see
        :meth:`_fast_forward`), whose blocks have ``rooms`` free slots; ``taken[j]`` is the KV blocks allocated by
        the start of iteration ``j``."""
        kv, running = rep.kv, rep.running
        n, steps = len(running), len(spans)
        used0, total = kv.gpu_used, kv.gpu_blocks
        work = rep.model.decode_work_totals
        tensor_s, hbm_s, overhead_s, busy_s = rep.tensor_s, rep.hbm_s, rep.overhead_s, rep.busy_s
        now = self.env.now
        starts: list[float] = []
        for t, idle in spans:
            tensor, hbm = work(n, context)
            tensor_s += tensor
            hbm_s += hbm
            overhead_s += idle
            busy_s += t
            starts.append(now)
            now += t
            context += n
        rep.tensor_s, rep.hbm_s, rep.overhead_s, rep.busy_s = tensor_s, hbm_s, overhead_s, busy_s
        if decays_ratio:
            for _ in range(steps):
                rep.token_ratio = max(RETRACT_MIN_TOKEN_RATIO, rep.token_ratio - RETRACT_RATIO_DECAY)
        # the records of all but the last iteration; the last is written when it ends, as the one-by-one loop does
        self.records.extend(rep.index, starts[:-1], starts[1:], n, [used0 + b for b in taken[1:steps]], total)
        self.max_admitted = max(self.max_admitted, n)
        size = kv.block_size
        for s, room in zip(running, rooms, strict=True):
            if steps > room:
                s.blocks += 1 + (steps - room - 1) // size
            s.generated += steps - 1
        kv.gpu_free -= taken[steps]
        kv.peak_used = max(kv.peak_used, kv.gpu_used)
        yield self.env.timeout_at(now)
        self.records.append(rep.index, starts[-1], now, 0, n, kv.gpu_used, total)
        self._decoded(rep, list(running), now)  # the last iteration's tokens, and the sequences it finished
        return True

    def _unfittable(self, rep: Replica) -> None:
        seq = rep.waiting[0]
        raise ClusterSimError(
            f"request {seq.req.id} needs {rep.kv.blocks_for(seq.prompt + seq.recompute + 1)} KV blocks but the replica "
            f"has {rep.kv.gpu_blocks}; use more tensor parallelism, fp8/int4 KV, or shorter prompts"
        )

    def _run_iteration(
        self, rep: Replica, prefill: list[tuple[Seq, int]], decodes: list[Seq], scheduled: bool = True
    ) -> Generator:
        chunks = [(c, s.prefilled) for s, c in prefill]
        samples = len(decodes) + sum(1 for s, c in prefill if c == s.to_prefill)
        self.max_admitted = max(self.max_admitted, len(rep.running))
        context = sum([s.prompt + s.generated for s in decodes])
        t, idle = rep.model.iteration_s(chunks, len(decodes), context, samples, scheduled)
        t += rep.kv.take_transfer_s()
        rep.add_work(chunks, len(decodes), context, idle)
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
        self._decoded(rep, decodes, now)

    def _decoded(self, rep: Replica, decodes: list[Seq], now: float) -> None:
        """Each of ``decodes`` emitted a token at ``now``; the finished ones leave (hot path: inline of _emit)."""
        for seq in decodes:
            seq.generated += 1
            if seq.generated >= seq.req.output_tokens:
                seq.done_s = now
                rep.running.remove(seq)
                rep.outstanding -= 1
                self._release(rep, seq)
                if self.max_in_flight is not None:
                    self._completed()

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
            if self.max_in_flight is not None:
                self._completed()

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
            if self.max_in_flight is not None:
                self._completed()
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
        self.records.append(rep.index, start, self.env.now, prefill_tokens, decodes, rep.kv.gpu_used, rep.kv.gpu_blocks)

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

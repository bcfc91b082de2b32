"""Mixture-of-experts routing: which experts and expert-parallel ranks a batch's tokens reach.

:mod:`~simulator.moe.routing` replays a routing source (uniform, Zipf popularity, group-limited, pooled, load-aware or
a recorded trace) so the busiest EP rank and the all-to-all bytes follow real routing, not a balanced assumption.
"""

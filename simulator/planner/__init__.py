"""Planner: search layouts, policies and thresholds for one model, node and workload -> ``Plan``.

- ``enumerate``  the search space: layouts (``layout_grid``, the one enumeration), vLLM and
                 Seesaw candidates (the workload sample: ``simulator.extrapolate``)
- ``estimate``   the closed-form makespan estimate that ranks candidates before simulating
- ``runner``     simulations in worker processes
- ``search``     ``plan``: estimate all, simulate the promising, rank, build the ``Plan``
- ``explain``    why the winner wins, why a candidate is out
- ``precision``  the precision kept, or searched when asked (``--dtype auto``)

A measured profile (``plan(..., measured=profile)``, ``node`` from ``catalog.measured_node``)
plans a CPU box like a GPU node: estimates and simulations then use its tables.
"""

from simulator.extrapolate import sample_requests
from simulator.planner.enumerate import (
    COMPARE_SPACE, Candidate, SearchSpace, enumerate_candidates, enumerate_layouts, layout_grid,
)
from simulator.planner.estimate import ReplicaWork, estimate_makespan_s, replica_works
from simulator.planner.search import DEFAULT_REFINE, DEFAULT_SCREEN, KNOBS, Objective, PlanResult, plan
from simulator.planner.precision import plan_precisions, precisions_to_search

__all__ = ["COMPARE_SPACE", "DEFAULT_REFINE", "DEFAULT_SCREEN", "KNOBS", "Candidate", "Objective",
           "PlanResult", "ReplicaWork", "SearchSpace", "enumerate_candidates", "enumerate_layouts",
           "estimate_makespan_s", "layout_grid", "plan", "plan_precisions", "precisions_to_search", "replica_works",
           "sample_requests"]

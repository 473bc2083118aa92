"""Tiny factories for scheduler tests (CPU only, no torch, no simpy) and a tiny plan file."""

from __future__ import annotations

from dataclasses import dataclass

from seesaw.scheduling import VllmScheduler


@dataclass(frozen=True)
class Req:
    id: str
    prompt_len: int
    output_len: int
    arrival_time_s: float = 0.0


def create_requests(n: int, prompt_len: int = 32, output_len: int = 8, start: int = 0) -> list[Req]:
    return [Req(f"r{start + i}", prompt_len, output_len) for i in range(n)]


def create_scheduler(num_blocks: int = 1000, **kw) -> VllmScheduler:
    kw.setdefault("block_size", 16)
    kw.setdefault("max_num_seqs", 8)
    kw.setdefault("max_num_batched_tokens", 512)
    return VllmScheduler(num_blocks, **kw)


def drive(sched, max_steps: int = 100_000):
    """Run a scheduler to completion with a trivial clock: steps complete in FIFO order.

    Keeps up to ``pipeline_depth`` steps in flight. Returns the list of steps executed.
    """
    done, in_flight = [], []
    for _ in range(max_steps):
        while True:
            step = sched.schedule()
            if step is None:
                break
            in_flight.append(step)
        if not in_flight:
            assert not sched.has_unfinished(), "scheduler stalled with unfinished requests"
            return done
        step = in_flight.pop(0)
        sched.on_step_done(step)
        done.append(step)
    raise AssertionError("did not finish")


def tiny_plan_file(path, layout: str = "T1", node=None, predicted: float = 100.0):
    """A plan.json for the built-in ``tiny`` model as the CPU engine runs it (fp32), under a vllm
    ``layout`` on ``node`` (default: the measured CPU profile's node), predicting ``predicted``
    tokens/s; returns ``path``."""
    from seesaw import catalog
    from seesaw.core import Plan, VllmPolicy, parse_parallel

    spec = catalog.load_model("tiny").model_copy(update={"dtype_bytes": 4})
    par = parse_parallel(layout)
    plan = Plan(model=spec, node=node or catalog.measured_node("cpu-2core", par.world_size),
                policy=VllmPolicy(layout=par), workload="test",
                predicted={"throughput_tok_s": predicted, "makespan_s": 1.0})
    path.write_text(plan.model_dump_json())
    return path


def assert_one_line_exit_2(res, *words):
    """A CLI result that is bad input: exit 2, one ``error:`` line on stderr, naming each of ``words``."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    for w in words:
        assert w in res.stderr, res.stderr

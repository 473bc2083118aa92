"""The vLLM-style policy on its own, driven by a trivial clock."""

import pytest

from seesaw.scheduling import Decode, Mixed, Prefill, SchedulerError, SeqStatus, split_across_replicas
from tests.factories import create_requests, create_scheduler, drive


def _run(sched, reqs):
    seqs = [sched.add_request(r) for r in reqs]
    steps = drive(sched)
    return seqs, steps


def test_every_request_finishes_with_its_output_length():
    sched = create_scheduler()
    reqs = create_requests(20, prompt_len=40, output_len=7)
    seqs, steps = _run(sched, reqs)
    assert all(s.status is SeqStatus.FINISHED and s.num_output_tokens == 7 for s in seqs)
    # token conservation: each seq computes its prompt once, then output-1 decode tokens
    computed = sum(sum(st.num_new_tokens) for st in steps)
    assert computed == sum(r.prompt_len + r.output_len - 1 for r in reqs)
    assert sched.blocks.num_free == sched.blocks.num_blocks


def test_prefill_has_priority_and_respects_limits():
    sched = create_scheduler(max_num_seqs=4, max_num_batched_tokens=100)
    _run_steps = [sched.add_request(r) for r in create_requests(10, prompt_len=30, output_len=3)]
    first = sched.schedule()
    assert isinstance(first, Prefill)
    assert len(first.seqs) == 3            # 3 * 30 <= 100 < 4 * 30
    sched.on_step_done(first)
    second = sched.schedule()
    assert isinstance(second, Prefill)     # waiting requests still admitted before decoding


def test_decode_after_waiting_drained():
    sched = create_scheduler(max_num_seqs=8)
    for r in create_requests(3, prompt_len=10, output_len=4):
        sched.add_request(r)
    p = sched.schedule()
    sched.on_step_done(p)
    d = sched.schedule()
    assert isinstance(d, Decode) and len(d.seqs) == 3 and d.num_new_tokens == [1, 1, 1]


def test_preemption_by_recompute_when_blocks_run_out():
    # 5 blocks of 16 tokens; each request grows to 16 + 24 - 1 = 39 cached tokens = 3 blocks,
    # so both cannot stay resident to the end
    sched = create_scheduler(num_blocks=5, max_num_seqs=4, watermark=0.0)
    reqs = create_requests(2, prompt_len=16, output_len=24)
    seqs, steps = _run(sched, reqs)
    assert sched.num_preemptions >= 1
    assert all(s.num_output_tokens == 24 for s in seqs)
    # a preempted sequence recomputes its prompt plus what it had generated
    assert sum(st.num_tokens for st in steps) > sum(r.prompt_len + r.output_len - 1 for r in reqs)


def test_request_that_can_never_fit_is_an_error():
    sched = create_scheduler(num_blocks=2)
    with pytest.raises(SchedulerError, match="need 3 KV blocks"):
        sched.add_request(create_requests(1, prompt_len=40, output_len=1)[0])


def test_chunked_prefill_puts_decodes_first_and_respects_budget():
    sched = create_scheduler(enable_chunked_prefill=True, max_num_batched_tokens=64, max_num_seqs=16)
    for r in create_requests(2, prompt_len=20, output_len=5):
        sched.add_request(r)
    first = sched.schedule()
    sched.on_step_done(first)
    for r in create_requests(3, prompt_len=100, output_len=5, start=10):
        sched.add_request(r)
    step = sched.schedule()
    assert isinstance(step, Mixed)
    assert step.num_new_tokens[:2] == [1, 1]           # the two decodes lead
    assert step.num_tokens == 64                        # budget filled by a prefill chunk
    sched.on_step_done(step)
    drive(sched)
    assert sched.blocks.num_free == sched.blocks.num_blocks


def test_chunked_long_prompt_split_into_chunks():
    sched = create_scheduler(enable_chunked_prefill=True, max_num_batched_tokens=50)
    (seq,) = [sched.add_request(r) for r in create_requests(1, prompt_len=120, output_len=2)]
    steps = drive(sched)
    assert [st.num_tokens for st in steps] == [50, 50, 20, 1]
    assert seq.num_output_tokens == 2


def test_pipeline_microbatches_hold_disjoint_sequences():
    sched = create_scheduler(max_num_seqs=8, pipeline_depth=4)
    for r in create_requests(8, prompt_len=8, output_len=6):
        sched.add_request(r)
    first = sched.schedule()
    sched.on_step_done(first)            # all 8 prefilled in one micro-batch
    batches = []
    while (st := sched.schedule()) is not None:
        batches.append(st)
    assert len(batches) == 4
    ids = [s.req_id for b in batches for s in b.seqs]
    assert len(ids) == len(set(ids)) == 8
    assert all(len(b.seqs) == 2 for b in batches)      # fair share: 8 running / depth 4
    assert sched.schedule() is None                     # pipeline full


def test_split_across_replicas_balances_tokens():
    reqs = create_requests(1, prompt_len=99, output_len=1) + create_requests(4, prompt_len=10, output_len=10, start=1)
    parts = split_across_replicas(reqs, 2)
    # the 100-token request alone on one replica, the four 20-token ones on the other
    assert [len(p) for p in parts] == [1, 4]
    assert split_across_replicas(reqs, 2) == parts      # deterministic
    with pytest.raises(SchedulerError):
        split_across_replicas(reqs, 0)


def test_prompt_over_budget_without_chunking_is_an_error():
    sched = create_scheduler(max_num_batched_tokens=64)
    with pytest.raises(SchedulerError, match="max_num_batched_tokens"):
        sched.add_request(create_requests(1, prompt_len=60, output_len=10)[0])


def test_request_needing_every_block_is_admitted_when_alone():
    sched = create_scheduler(num_blocks=100, watermark=0.05, max_num_batched_tokens=2048)
    # 1599 + 1 tokens = exactly the 100 blocks of 16
    (seq,) = [sched.add_request(r) for r in create_requests(1, prompt_len=1599, output_len=1)]
    drive(sched)
    assert seq.num_output_tokens == 1

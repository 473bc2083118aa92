"""The real executor: a LLaMA-family model sharded over ranks on torch.distributed.

Modules (import them directly; importing this package loads nothing, so ``seesaw`` stays torch-free
outside the engine):

- ``model``: ``LlamaShard`` (one rank's layers / TP slice), ``Comm``, ``Shard``, RoPE;
- ``attention``: varlen causal attention over the paged KV cache (``AttnMetadata``);
- ``kv``: ``BlockManager`` (block tables, allocate/free) and ``KVCache`` (per-layer K/V blocks);
- ``weights``: host ``WeightStore`` in shared memory, ``materialize(store, layout, rank)``,
  ``build_shard``, ``resolve_model``, ``CheckpointError``;
- ``runner``: ``ModelRunner.execute({seq_id: new tokens}) -> {seq_id: next token}``, ``generate``;
- ``dist``: ``spawn`` (local ranks, file:// rendezvous), ``TorchComm`` (TP/PP collectives),
  ``run_layout`` (a batch under a layout across ranks);
- ``gguf``: GGUF -> HF safetensors converter; ``tokenizer``: HF ``tokenizer.json`` or bytes;
- ``tiny``: seeded random LLaMA checkpoints (the catalog's ``tiny`` model);
- ``worker``: engine config, control plane and the per-rank step worker;
- ``driver``: rank 0's loop running the shared ``vllm`` policy (``run_batch``);
  ``seesaw_driver``: the same for the shared ``seesaw`` policy (prefill, swaps, re-shard, decode);
- ``batch_io``: OpenAI batch JSONL in and out, errors file, resume;
- ``reshard``: in-place re-sharding of a rank's model from the host weight store, layer by layer;
- ``host_kv``: the host KV pool in shared memory (``[block, layer, k/v, kv_head, token, dim]``)
  and ``swap_out``/``swap_in`` that convert the layout inside the copy;
- ``prefetch``: the per-rank background copier and replica-wide completion agreement.
"""

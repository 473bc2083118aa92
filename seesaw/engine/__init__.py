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
- ``tiny``: seeded random LLaMA checkpoints (the catalog's ``tiny`` model).
"""

"""The real executor: a LLaMA-family model sharded over ranks on torch.distributed.

Modules (import them directly; importing this package loads nothing, so ``seesaw`` stays torch-free
outside the engine):

- ``model``: ``LlamaShard`` (one rank's layers / TP slice), ``Comm``, ``Shard``, RoPE;
- ``attention``: varlen causal attention over the paged KV cache, read in place through the
  block tables (``AttnMetadata``); ``cpu_kernel``: its compiled CPU kernel; ``cpu_ops``: the
  layer's element-wise work (RoPE, RMSNorm, SwiGLU) in C on the CPU; ``cpu_build``: how those
  are compiled and loaded; ``step_inputs``: a
  step's inputs built into reused buffers; ``cuda_graphs``: decode steps replayed from CUDA
  graphs; ``sampling``: next tokens chosen on the device;
- ``kv``: ``BlockManager`` (block tables, allocate/free), ``ReplicaBlocks`` (the driver's) and
  ``KVCache`` (per-layer K/V blocks); ``kv_sizing``: how many blocks each rank holds;
- checkpoints: ``files`` (``CheckpointError``, the model cache), ``hf_config`` (``config.json`` ->
  ``ModelSpec``), ``weights`` (host ``WeightStore`` in shared memory, ``materialize(store, layout,
  rank)``, ``build_shard``), ``checkpoint`` (``resolve_model``, ``resolve_checkpoint``,
  ``checkpoint_name``: a model name -> a checkpoint directory), ``gguf`` (GGUF -> HF safetensors
  converter), ``tiny`` (seeded random LLaMA checkpoints, the catalog's ``tiny`` model),
  ``tokenizer`` (HF ``tokenizer.json`` or bytes);
- ``runner``: ``ModelRunner.execute({seq_id: new tokens}) -> {seq_id: next token}``, ``generate``;
- ``dist``: ``spawn`` (local ranks, file:// rendezvous), ``TorchComm`` (TP/PP collectives),
  ``run_layout`` (a batch under a layout across ranks);
- a run: ``config`` (``EngineConfig``: a core policy spec plus run-time settings; ``EngineError``),
  ``dtypes`` (``TORCH_DTYPES``: dtype name -> torch dtype), ``messages`` (the typed step
  messages), ``control`` (``ControlPlane``: messages and sampled tokens over gloo), ``worker``
  (``StepWorker``, every rank; ``warm_up``), ``vllm_driver`` (rank 0's loop running the shared
  ``vllm`` policy), ``seesaw_driver`` and ``seesaw_worker`` (the same for the shared ``seesaw``
  policy: prefill, swaps, re-shard, decode), ``host_pools`` (a Seesaw run's host KV pools),
  ``launch``
  (``run_batch``, ``rank_main``: spawn the ranks and pick the driver);
- ``batch_io``: OpenAI batch JSONL in and out, errors file, resume;
- ``reshard``: in-place re-sharding of a rank's model from the host weight store, layer by layer;
- ``host_kv``: the host KV pool in shared memory (``[block, layer, k/v, kv_head, token, dim]``)
  and ``swap_out``/``swap_in`` that convert the layout inside the copy;
- ``prefetch``: the per-rank background copier and replica-wide completion agreement.
"""

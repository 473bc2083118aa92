"""A LLaMA-family decoder's shape and what follows from it (parameters, bytes, FLOPs per token).

Field names follow HF ``LlamaConfig`` so a ``config.json`` loads directly. Units are in the names
(``_bytes``); one activation element takes ``dtype_bytes``, and so do a weight and a KV element unless
``weight_dtype_bytes`` / ``kv_dtype_bytes`` say otherwise (FP8: ``Precision.apply``). Under FP8 weights
only the decoder's GEMM weights are 1 byte; the embedding, LM head, norms and biases stay 16-bit, as
vLLM's ``fp8`` quantization leaves them. Three HF architectures share this
shape: ``llama`` (LLaMA 2/3/3.1/3.3, CodeLlama, SmolLM2), ``mistral`` (the same layers; its
``sliding_window`` is recorded, not modelled) and ``qwen2`` (Qwen2/Qwen2.5: a bias on Q, K and V).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seesaw.core.base import Spec
from seesaw.core.constants import DTYPE_SHORT_NAMES
from seesaw.core.errors import SpecError

# bytes per element of each precision the simulator and planner cost
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# what ``--dtype`` takes (fp8: FP8 weights and GEMMs, 16-bit activations and KV), and
# ``--kv-cache-dtype`` (auto: the activations' 16-bit type, as in vLLM; fp8: an FP8 KV cache)
DTYPES = ("bf16", "fp16", "fp8")
KV_CACHE_DTYPES = ("auto", "fp8")
_ALIASES = {**DTYPE_SHORT_NAMES, "half": "fp16", "float8": "fp8", "fp8_e4m3": "fp8"}


class Precision(Spec):
    """The number formats of one deployment: weights (and the GEMMs they run in) and the KV cache.

    ``fp8`` weights are W8A8 FP8 GEMMs (vLLM ``--quantization fp8``) at the GPU's FP8 tensor peak,
    with bf16 activations, attention and all-reduces; ``kv_cache_dtype="fp8"`` stores K and V in 1
    byte (vLLM ``--kv-cache-dtype fp8``), read back to 16-bit inside the attention kernel."""

    dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"

    @classmethod
    def parse(cls, dtype: str | None = None, kv_cache_dtype: str | None = None) -> "Precision":
        """From the option values (``bfloat16``/``float16`` accepted too); bad ones: one line."""
        d = _ALIASES.get(str(dtype).lower(), str(dtype).lower()) if dtype is not None else "bf16"
        k = _ALIASES.get(str(kv_cache_dtype).lower(), str(kv_cache_dtype).lower()) if kv_cache_dtype else "auto"
        if d not in DTYPES:
            raise SpecError(f"--dtype {dtype!r}: expected {', '.join(DTYPES)}")
        if k not in KV_CACHE_DTYPES:
            raise SpecError(f"--kv-cache-dtype {kv_cache_dtype!r}: expected {', '.join(KV_CACHE_DTYPES)}")
        return cls(dtype=d, kv_cache_dtype=k)

    @property
    def activation_dtype(self) -> str:
        return "fp16" if self.dtype == "fp16" else "bf16"

    @property
    def kv_dtype(self) -> str:
        return self.activation_dtype if self.kv_cache_dtype == "auto" else self.kv_cache_dtype

    @property
    def label(self) -> str:
        """``bf16``, ``fp8``, ``fp8 kv-fp8``: weights, then the KV cache when it differs."""
        return self.dtype + (f" kv-{self.kv_dtype}" if self.kv_dtype != self.activation_dtype else "")

    def apply(self, model: "ModelSpec") -> "ModelSpec":
        """``model`` costed in this precision (its bytes per activation, weight and KV element)."""
        wb, kb = PRECISION_BYTES[self.dtype], PRECISION_BYTES[self.kv_dtype]
        ab = PRECISION_BYTES[self.activation_dtype]
        return model.model_copy(update={"dtype_bytes": ab, "weight_dtype_bytes": None if wb == ab else wb,
                                        "kv_dtype_bytes": None if kb == ab else kb})


class ModelSpec(Spec):
    """A LLaMA-family decoder. Field names follow HF ``LlamaConfig`` so a ``config.json`` loads."""

    name: str = Field(description="catalog name, e.g. llama2-70b")
    num_hidden_layers: int = Field(gt=0, description="decoder layers L")
    hidden_size: int = Field(gt=0, description="model width h")
    num_attention_heads: int = Field(gt=0, description="query heads h_q")
    num_key_value_heads: int = Field(gt=0, description="KV heads h_kv (GQA)")
    head_dim: int | None = Field(default=None, gt=0, description="per-head width d; default h/h_q")
    intermediate_size: int = Field(gt=0, description="SwiGLU inner width")
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: dict | None = Field(default=None, description="HF rope_scaling dict, if any")
    rms_norm_eps: float = Field(default=1e-5, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)
    dtype_bytes: int = Field(default=2, gt=0, description="bytes per activation (and weight/KV) element (bf16=2)")
    weight_dtype_bytes: int | None = Field(
        default=None, gt=0, description="bytes per decoder GEMM weight when not dtype_bytes (1: FP8 weights, "
        "whose GEMMs run at the GPU's FP8 peak)")
    kv_dtype_bytes: int | None = Field(
        default=None, gt=0, description="bytes per KV-cache element when not dtype_bytes (1: FP8 KV cache)")
    model_type: Literal["llama", "mistral", "qwen2"] = Field(
        default="llama", description="HF architecture: llama, mistral, or qwen2 (bias on Q, K, V)")
    sliding_window: int | None = Field(
        default=None, gt=0, description="sliding-window attention span (Mistral v0.1; Qwen2 with "
        "use_sliding_window): recorded, not modelled: attention is costed over the whole context, and "
        "the engine refuses a sequence longer than the window")
    source: str = Field(default="", description="where the shape comes from")

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelSpec":
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size is not divisible by num_attention_heads; give head_dim")
        return self

    @classmethod
    def from_hf_config(cls, config: dict, name: str, dtype_bytes: int = 2) -> "ModelSpec":
        """Build from a HF ``config.json`` dict, ignoring keys this model does not use."""
        keys = set(cls.model_fields) - {"name", "dtype_bytes", "weight_dtype_bytes", "kv_dtype_bytes", "source"}
        if config.get("model_type") == "qwen2" and not config.get("use_sliding_window", False):
            config = {**config, "sliding_window": None}  # Qwen2.5 lists a window it does not use
        return cls(
            name=name,
            dtype_bytes=dtype_bytes,
            source="config.json",
            **{k: v for k, v in config.items() if k in keys and v is not None},
        )

    # -- derived shapes ------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.d_head

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.d_head

    @property
    def attn_params_per_layer(self) -> int:
        # W_q [h, h_q d], W_k and W_v [h, h_kv d], W_o [h_q d, h]
        return self.hidden_size * (2 * self.q_size + 2 * self.kv_size)

    @property
    def mlp_params_per_layer(self) -> int:
        # SwiGLU: gate and up [h, i], down [i, h]
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def context_len(self) -> int:
        """The longest sequence (prompt + output) the engine runs: the context, or the sliding window
        when one is set (attention over a window is not implemented, so longer ones are refused)."""
        return min(self.max_position_embeddings, self.sliding_window or self.max_position_embeddings)

    @property
    def qkv_bias(self) -> bool:
        """Whether Q, K and V projections carry a bias (Qwen2; HF ``Qwen2Attention``)."""
        return self.model_type == "qwen2"

    @property
    def params_per_layer(self) -> int:
        # two RMSNorm weight vectors per layer; Qwen2's Q, K, V biases
        bias = self.q_size + 2 * self.kv_size if self.qkv_bias else 0
        return self.attn_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden_size + bias

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def num_parameters(self) -> int:
        # embedding + L layers + final norm + LM head (absent when tied)
        return (
            self.embedding_params
            + self.num_hidden_layers * self.params_per_layer
            + self.hidden_size
            + self.lm_head_params
        )

    @property
    def linear_bytes_per_param(self) -> int:
        """Bytes per decoder GEMM weight (Q, K, V, O, gate, up, down): 1 under FP8 weights."""
        return self.weight_dtype_bytes or self.dtype_bytes

    @property
    def kv_bytes_per_element(self) -> int:
        return self.kv_dtype_bytes or self.dtype_bytes

    @property
    def fp8_weights(self) -> bool:
        """Whether the decoder's GEMMs run in FP8 (1-byte weights): they need FP8 tensor cores."""
        return self.linear_bytes_per_param == 1

    @property
    def dtype_label(self) -> str:
        """The precision as ``Precision.label`` names it, read off the bytes (2 bytes: bf16)."""
        names = {4: "fp32", 2: "bf16", 1: "fp8"}
        weights, kv = self.linear_bytes_per_param, self.kv_bytes_per_element
        label = names.get(weights, f"{weights}-byte")
        return label + (f" kv-{names.get(kv, f'{kv}-byte')}" if kv != self.dtype_bytes else "")

    @property
    def weight_bytes_per_layer(self) -> int:
        linear = self.attn_params_per_layer + self.mlp_params_per_layer
        return linear * self.linear_bytes_per_param + (self.params_per_layer - linear) * self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        rest = self.num_parameters - self.num_hidden_layers * self.params_per_layer  # embedding, norm, head
        return self.num_hidden_layers * self.weight_bytes_per_layer + rest * self.dtype_bytes

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        # K and V, each h_kv * d elements
        return 2 * self.kv_size * self.kv_bytes_per_element

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_hidden_layers * self.kv_bytes_per_token_per_layer

    def flops_per_token(self) -> int:
        """Dense matmul FLOPs per token, attention scores excluded (2 FLOPs per MAC)."""
        return 2 * (self.num_hidden_layers * (self.attn_params_per_layer + self.mlp_params_per_layer)
                    + self.vocab_size * self.hidden_size)

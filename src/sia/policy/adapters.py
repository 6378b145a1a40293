"""Checks that a LoRA adapter folder fits the served model, before anything is loaded into it.

PEFT injects an adapter's layers into the model before it reads the weights,
so a folder whose weights do not fit (wrong shapes, unknown modules, a broken
file) fails half way, with random LoRA layers already in the shared model.
`check_adapter` reads the config and the weight file's header (no tensors)
and compares every tensor with the module it targets, so such a folder is
refused with the model untouched; `LocalPolicy.load_adapter` also restores the
model from disk if a load fails anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

from sia.errors import PolicyError


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    st = path / "adapter_model.safetensors"
    if st.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(st), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # a truncated or garbage file
            raise PolicyError(f"{st} cannot be read ({type(e).__name__}: {e})", "save the adapter again") from None
    raise PolicyError(f"{path} has no adapter_model.safetensors", "save the adapter with save_pretrained (safetensors)")


def check_adapter(model, path: Path) -> None:
    """Refuse an adapter folder whose LoRA weights do not fit `model` (a plain transformers model, adapters aside)."""
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise PolicyError(f"{path}/adapter_config.json cannot be read ({e})", "save the adapter again") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise PolicyError(f"{path} is not a LoRA adapter (peft_type {config.get('peft_type') if isinstance(config, dict) else None!r})",
                          "sia serves LoRA adapters")
    r = config.get("r")
    shapes = _shapes(path)
    if not shapes:
        raise PolicyError(f"{path} holds no weights", "save the adapter again")
    modules = dict(model.named_modules())
    for key, shape in shapes.items():
        name = key.removeprefix("base_model.model.")
        for part in (".lora_A.weight", ".lora_B.weight"):
            if name.endswith(part):
                module = modules.get(name[: -len(part)]) or modules.get("base_layer." + name[: -len(part)])
                if module is None or not hasattr(module, "in_features"):
                    raise PolicyError(f"{path}: {key} targets no linear layer of the model", "train the adapter on this base model")
                want = (r, module.in_features) if part == ".lora_A.weight" else (module.out_features, r)
                if isinstance(r, int) and tuple(shape) != want:
                    raise PolicyError(f"{path}: {key} has shape {list(shape)}, the model needs {list(want)}",
                                      "train the adapter on this base model with the rank in its config")
                break
        else:
            raise PolicyError(f"{path}: unexpected tensor {key}", "save the adapter with PEFT's save_pretrained")

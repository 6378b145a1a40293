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

import functools
import json
import threading
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


CANARY_FILE = "sia_canary.json"
"""A few token sequences the adapter was trained on, saved beside its weights: each as `ids` and `start`, the position
from which its logprobs are compared. Where an adapter folder has none, `CANARY_TEXTS` are scored whole."""
CANARY_TEXTS = ("The capital of France is Paris.", "def add(a, b):\n    return a + b", "Answer: positive")
CANARY_TOLERANCE = 0.1
"""Nats: a canary passes when the adapter's effect on its tokens' logprobs as served (under its name, less the base)
differs from its effect in a local PEFT forward pass of the adapter meant to be served (with it, less without), on
average over the canary's scored tokens, by at most this, or at most `CANARY_RELATIVE` of that effect's own size.
Comparing effects cancels most of what the engines differ in on the base; the rest is noise of the 4-bit llama.cpp
file, which grows with the effect. Measured with three random adapters (tests/test_adapter_proof.py) on canaries of 33
scored tokens: HF serves each at 0.000; llama.cpp serves them at 0.083, 0.108 and 0.081 when their effects are 0.250,
0.131 and 0.361 nats a token; handed another of them it errs by 0.17 to 0.38, and serving the base instead errs by the
whole effect."""
CANARY_RELATIVE = 0.5
CANARY_MIN_EFFECT = 2 * CANARY_TOLERANCE
"""Below this effect (nats a token) a canary cannot tell the adapter from an engine's noise: the proof says so and the
adapter is served unproven rather than refused (an adapter that barely moves its own training tokens)."""


def adapter_sha256(path: Path) -> str:
    """The content hash of an adapter folder: its config and weights (not sia's training log), file names included."""
    import hashlib

    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        f = Path(path) / name
        if f.is_file():
            h.update(name.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def write_canary(path: Path, sequences: list[tuple[list[int], int]]) -> None:
    """Save `sequences` ((token ids, start of the scored part)) as the adapter folder's canary."""
    (Path(path) / CANARY_FILE).write_text(json.dumps([{"ids": list(ids), "start": int(start)} for ids, start in sequences]))


def read_canary(path: Path, encode) -> list[tuple[list[int], int]]:
    """The adapter's canary sequences, or `CANARY_TEXTS` encoded and scored from their second token."""
    try:
        items = json.loads((Path(path) / CANARY_FILE).read_text())
        seqs = [(list(map(int, d["ids"])), int(d["start"])) for d in items]
        if seqs and all(1 <= s < len(ids) for ids, s in seqs):
            return seqs
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return [(list(encode(t)), 1) for t in CANARY_TEXTS]


def reference_logprobs(base_dir: Path, adapter: Path, sequences: list[tuple[list[int], int]]
                       ) -> tuple[list[list[float]], list[list[float]]]:
    """Each sequence's token logprobs from `start` on, with the adapter and without it, by a fresh PEFT forward pass on the
    base model in fp32: what the adapter means, whatever engine serves it."""
    import torch
    from peft import PeftModel

    with _REFERENCE_LOCK:
        model = PeftModel.from_pretrained(_reference_base(str(base_dir)), str(adapter)).eval()

        def run(ids: list[int], start: int) -> list[float]:
            x = torch.tensor([ids])
            lp = torch.log_softmax(model(input_ids=x).logits.float()[0, :-1], -1)
            return lp.gather(1, x[0, 1:, None])[:, 0][start - 1:].tolist()

        try:
            with torch.inference_mode():
                tuned = [run(ids, start) for ids, start in sequences]
                with model.disable_adapter():
                    base = [run(ids, start) for ids, start in sequences]
        finally:
            model.unload()  # the LoRA layers out again: the cached base model is as it was
    return tuned, base


_REFERENCE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _reference_base(base_dir: str):
    """The base model in fp32, read once per process for the canaries (not the served one: that is what is checked)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()


def canary_check(served: list[list[float | None]], served_base: list[list[float | None]], reference: list[list[float]],
                 reference_base: list[list[float]]) -> tuple[bool | None, float, float]:
    """Whether the canaries pass (`CANARY_TOLERANCE`; None when the adapter's effect on them is below `CANARY_MIN_EFFECT`,
    too small to tell from an engine's noise), with the mean error and the mean size of the adapter's effect: per token,
    the difference between the effect on its logprob as served and as it should be, and the effect as it should be."""
    rows = [((a - b) - (c - d), c - d) for s, sb, r, rb in zip(served, served_base, reference, reference_base)
            for a, b, c, d in zip(s, sb, r, rb) if a is not None and b is not None]
    if not rows:
        return None, 0.0, 0.0
    error = sum(abs(x) for x, _ in rows) / len(rows)
    effect = sum(abs(e) for _, e in rows) / len(rows)
    if effect < CANARY_MIN_EFFECT:
        return None, error, effect
    return error <= max(CANARY_TOLERANCE, CANARY_RELATIVE * effect), error, effect

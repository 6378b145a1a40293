"""Proof of the served adapter: after each load the name must be listed and the adapter's effect on its canary, as served,
must match a local PEFT forward pass of the folder meant to be served; a backend handed another adapter's file is
refused, fail closed; every recorded call carries the hash of the adapter that answered it."""

from pathlib import Path

import pytest

from sia.errors import PolicyError
from sia.policy.choice import llama_missing

pytestmark = pytest.mark.model  # every test here serves the embedded model
PROMPT = "<|im_start|>user\nIs 'a wonderful film' positive or negative?<|im_end|>\n<|im_start|>assistant\n"


def _adapter(folder: Path, seed: int) -> Path:
    """A LoRA adapter with random, non-zero weights (two seeds: two different adapters); its canary the label replies
    and the 32 prompt tokens before them, as a trained adapter's (`sia.weights.trainer.canary_sequences`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sia.policy.adapters import write_canary
    from sia.policy.embedded import embedded_model_dir

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(embedded_model_dir())),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data *= 0.3
    model.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    replies = [tok(w, add_special_tokens=False)["input_ids"] for w in ("positive", "negative")]
    write_canary(folder, [(prompt + reply, max(1, len(prompt) - 32)) for reply in replies])
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return _adapter(root / "v1", 0), _adapter(root / "v2", 2)  # they move their canaries by 0.25 and 0.36 nats a token


@pytest.mark.skipif(llama_missing() is not None, reason=str(llama_missing()))
def test_llama_cpp_handed_the_previous_versions_file_is_refused(adapters, monkeypatch):
    import sia.policy.llama as llama
    from sia.policy.adapters import adapter_sha256
    from sia.policy.runtime import PolicyRuntime

    v1, v2 = adapters
    rt = PolicyRuntime.local(backend="llamacpp")
    try:
        proof = rt.load_adapter("v1", v1)
        assert proof["proven"] and proof["error"] <= proof["tolerance"] and proof["canaries"] == 2, proof
        assert rt.service.adapter_hashes["v1"] == adapter_sha256(v1) == proof["sha256"]
        real = llama.adapter_gguf
        monkeypatch.setattr(llama, "adapter_gguf", lambda path, config: real(v1, config))  # the engine gets v1's file for v2
        with pytest.raises(PolicyError, match="serves something else under 'v2'"):
            rt.load_adapter("v2", v2)
        assert not rt.has_model("v2") and "v2" not in rt.service.adapter_hashes, "fail closed: v2 is not served"
        monkeypatch.setattr(llama, "adapter_gguf", real)
        again = rt.load_adapter("v2", v2)
        assert again["proven"] and again["error"] <= again["tolerance"], "handed its own file, v2 is proven and served"
    finally:
        rt.close()


def test_an_adapter_served_under_its_name_is_proven_and_each_recorded_call_carries_its_hash(adapters, tmp_path):
    from sia.api import evaluate
    from sia.policy.adapters import adapter_sha256
    from sia.store.store import Store

    v1, _ = adapters
    result = evaluate("sentiment", run_dir=tmp_path / "eval", limit=2, adapter=str(v1), policy_backend="hf")
    with Store(tmp_path / "eval", write=False) as store:
        calls = [e.data for r in store.rollouts(result.evaluation_id) for e in store.events(r.id) if e.kind == "llm_call"]
    assert calls and all(c["adapter_sha256"] == adapter_sha256(v1) for c in calls)


def test_a_base_model_served_where_an_adapter_was_asked_for_is_refused_and_a_weak_one_is_served_unproven(
        adapters, hf_runtime, monkeypatch):
    """An engine that lists the name but answers with the base model (an adapter silently dropped) fails the canary too."""
    v1, _ = adapters
    policy = hf_runtime.local_policy()
    real = policy.score
    monkeypatch.setattr(policy, "score", lambda groups, model=None: real(groups, None))
    with pytest.raises(PolicyError, match="serves something else under 'dropped'"):
        hf_runtime.load_adapter("dropped", v1)
    assert not hf_runtime.has_model("dropped")
    monkeypatch.undo()
    from sia.policy import adapters as canary

    monkeypatch.setattr(canary, "CANARY_MIN_EFFECT", 10.0)  # as if the adapter barely moved its canary
    weak = hf_runtime.load_adapter("weak", v1)
    assert not weak["proven"] and "unproven" in weak["note"] and hf_runtime.has_model("weak"), "served, and said so"

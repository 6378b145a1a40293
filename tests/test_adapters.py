"""LoRA adapters served by name next to the base, loaded without a restart, identical to plain PEFT."""

import httpx
import pytest
import torch

from sia.errors import PolicyError
from sia.harness.client import LLMClient
from sia.policy.embedded import embedded_model_dir


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A LoRA adapter on the embedded model with random (non-zero) weights, saved in PEFT's layout."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()))
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "a-test"
    model.save_pretrained(out)
    return out


PROMPT = "<|im_start|>user\nIs 'a wonderful film' positive or negative?<|im_end|>\n<|im_start|>assistant\n"


def test_adapter_is_served_by_name_and_matches_plain_peft(hf_runtime, adapter_dir):
    runtime = hf_runtime
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = LLMClient(runtime.service.url, "base", api_key=runtime.service.api_key)
    base_before = client.logprobs(PROMPT, ["positive", "negative"])
    r = httpx.post(runtime.service.url + "/sia/adapters", json={"name": "a-test", "path": str(adapter_dir)},
                   headers={"Authorization": f"Bearer {runtime.service.api_key}"}, timeout=120)
    assert r.status_code == 200 and "a-test" in r.json()["models"]
    tuned = LLMClient(runtime.service.url, "a-test", api_key=runtime.service.api_key).logprobs(PROMPT, ["positive", "negative"])
    base_after = client.logprobs(PROMPT, ["positive", "negative"])
    assert base_after == pytest.approx(base_before, abs=1e-4), "loading an adapter must not change the base"
    assert abs(tuned[0] - base_before[0]) > 1e-3, "the adapter should change the outputs"
    # outside sia: plain transformers + PEFT on the same folders
    tok = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(embedded_model_dir())), str(adapter_dir)).eval()
    n_prompt = len(tok(PROMPT, add_special_tokens=False)["input_ids"])
    expected = []
    for label in ["positive", "negative"]:
        ids = tok(PROMPT + label, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = plain(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        expected.append(float(lp[n_prompt - 1 :].sum()))
    assert tuned == pytest.approx(expected, abs=1e-3)
    # generation with the adapter also runs through the batched decode loop
    reply = LLMClient(runtime.service.url, "a-test", api_key=runtime.service.api_key).chat("Say hi", max_tokens=4)
    assert isinstance(reply.text, str)


def test_bad_adapter_folder_is_a_clear_error(runtime, tmp_path):
    with pytest.raises(PolicyError, match="not a PEFT adapter folder"):
        runtime.load_adapter("bad", tmp_path)
    r = httpx.post(runtime.service.url + "/sia/adapters", json={"name": "bad", "path": str(tmp_path)},
                   headers={"Authorization": f"Bearer {runtime.service.api_key}"})
    assert r.status_code == 400 and "adapter_config.json" in r.json()["error"]["message"]


@pytest.mark.model
def test_sia_eval_with_adapter_records_it(adapter_dir, tiny_task, tmp_path):
    import json
    import subprocess

    from conftest import SIA

    run = tmp_path / "run"
    r = subprocess.run([SIA, "eval", str(tiny_task), "--adapter", str(adapter_dir), "--limit", "2", "--json", "--run-dir", str(run)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["adapter"] == "a-test"
    t = json.loads(subprocess.run([SIA, "trace", str(run), "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert {e["data"]["model"] for ro in t for e in ro["events"] if e["kind"] == "llm_call"} == {"a-test"}

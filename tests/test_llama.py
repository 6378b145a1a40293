"""The llama.cpp engine: the same answers as HF within a stated tolerance, batched, seeded, with adapters served by name."""

import threading

import pytest

from sia.harness.client import LLMClient
from sia.policy.choice import llama_missing

pytestmark = pytest.mark.skipif(llama_missing() is not None, reason=str(llama_missing()))
PROMPT = "<|im_start|>user\nIs 'a wonderful film' positive or negative?<|im_end|>\n<|im_start|>assistant\n"
COUNT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
         "<|im_start|>user\nCount from 1 to 10.<|im_end|>\n<|im_start|>assistant\n")
"""A prompt whose greedy reply has no near-tie (top-2 logit gap above 1 for 12 tokens): llama.cpp's CPU kernels sum
in a different order for different batch sizes, so a tie within ~0.05 nats may break either way, batched or alone."""
TOL = 0.25
"""Nats: the GGUF is 4-bit (Q4_1) and HF runs its fp32 dequantisation, so logprobs differ by quantisation noise."""


@pytest.fixture(scope="module")
def llama_runtime():
    from sia.policy.runtime import PolicyRuntime

    rt = PolicyRuntime.local(backend="llamacpp")
    yield rt
    rt.close()


def _client(rt, model=None):
    return LLMClient(rt.service.url, model or rt.model_name(), api_key=rt.service.api_key)


def test_scores_and_greedy_answers_match_hf_within_quantisation_noise(llama_runtime, hf_runtime):
    for prompt in (PROMPT, PROMPT.replace("wonderful", "dreadful")):
        ll, hf = (
            _client(llama_runtime).logprobs(prompt, ["positive", "negative"]),
            _client(hf_runtime).logprobs(prompt, ["positive", "negative"]),
        )
        assert ll == pytest.approx(hf, abs=TOL), (ll, hf)
    assert _client(llama_runtime).complete(COUNT, max_tokens=12).text == _client(hf_runtime).complete(COUNT, max_tokens=12).text


def test_a_cached_scoring_prefix_gives_the_scores_of_a_fresh_one(llama_runtime):
    policy = llama_runtime.service.backend.policy
    head = policy.encode("Label the review. great film: positive. dull plot: negative. Review: ")
    groups = [
        [head + policy.encode(review) + policy.encode(label) for label in (" positive", " negative")]
        for review in ("I loved it.", "Terrible acting.", "I loved it.")
    ] + [[head[:4] + policy.encode(" yes")] * 2]
    fresh = []
    for g in groups:
        policy.forget_prefix()
        fresh.append(policy.score([g]))
    cached = [policy.score([g]) for g in groups]  # each reuses the head the one before left in the cache
    assert cached == fresh


def test_concurrent_requests_are_batched_and_seeded_sampling_repeats(llama_runtime):
    policy = llama_runtime.service.backend.policy
    alone = _client(llama_runtime).complete(COUNT, max_tokens=12)
    sampled = [_client(llama_runtime).complete(PROMPT, max_tokens=12, temperature=0.9, seed=7).text for _ in range(2)]
    assert sampled[0] == sampled[1], "the same seed gives the same sample"
    before = policy.forward_passes
    replies = [None] * 8

    def one(i):  # request 0 decodes greedily among seven sampled ones
        prompt, temperature = (COUNT, 0.0) if i == 0 else (PROMPT, 0.9)
        replies[i] = _client(llama_runtime).complete(prompt, max_tokens=12, temperature=temperature, seed=100 + i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert policy.forward_passes - before < 8 * 13, "eight requests of 12 tokens shared decode calls"
    assert replies[0].text == alone.text, "a greedy reply is the same batched or alone"
    assert len({r.text for r in replies[1:]}) > 1, "different seeds give different samples"
    data = replies[1].raw["choices"][0]
    assert len(data["token_ids"]) == len(data.get("logprobs", {}).get("token_logprobs") or data["token_ids"])


def test_a_trained_adapter_is_converted_served_by_name_and_answers_as_on_hf(llama_runtime, hf_runtime, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sia.policy.embedded import embedded_model_dir

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(embedded_model_dir())),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False),
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data *= 0.3
    model.save_pretrained(tmp_path / "a-llama")
    for rt in (llama_runtime, hf_runtime):
        rt.load_adapter("a-llama", tmp_path / "a-llama")
    base = _client(llama_runtime, "base").logprobs(PROMPT, ["positive", "negative"])
    tuned = _client(llama_runtime, "a-llama").logprobs(PROMPT, ["positive", "negative"])
    on_hf = _client(hf_runtime, "a-llama").logprobs(PROMPT, ["positive", "negative"])
    assert abs(tuned[0] - base[0]) > 0.1, "the adapter changes the answer's scores"
    assert tuned == pytest.approx(on_hf, abs=TOL), (tuned, on_hf)
    assert (
        _client(llama_runtime, "a-llama").complete(COUNT, max_tokens=10).text
        == _client(hf_runtime, "a-llama").complete(COUNT, max_tokens=10).text
    )
    assert _client(llama_runtime, "base").logprobs(PROMPT, ["positive", "negative"]) == base, "the base is untouched"


def test_embeddings_agree_with_hf_and_leave_generation_as_it_was(llama_runtime, hf_runtime):
    import numpy as np

    texts = ["a gripping, beautifully acted film", "我想咨询一下离婚后孩子抚养权的问题"]
    before = _client(llama_runtime).complete(COUNT, max_tokens=12).text
    ll, hf = (np.array(_client(rt).embed(texts)) for rt in (llama_runtime, hf_runtime))
    cos = (ll * hf).sum(1) / np.linalg.norm(ll, axis=1) / np.linalg.norm(hf, axis=1)
    assert cos.min() > 0.99, cos  # 4-bit weights against their fp32 dequantisation: 0.9995 measured
    assert _client(llama_runtime).complete(COUNT, max_tokens=12).text == before


def test_many_continuations_scored_together_equal_each_scored_alone(llama_runtime, hf_runtime):
    """Twenty labels after one prompt share decode calls (each in its own sequence over the prompt's cells), and score
    as close to HF fp32 as labels scored one at a time."""
    policy = llama_runtime.service.backend.policy
    prompt = policy.encode(PROMPT.replace("wonderful film", "离婚后孩子的抚养权归谁"))
    labels = [
        "婚姻家庭",
        "劳动纠纷",
        "交通事故",
        "债权债务",
        "刑事辩护",
        "合同纠纷",
        "房产纠纷",
        "侵权",
        "公司法",
        "医疗纠纷",
        "拆迁安置",
        "行政诉讼",
        "建设工程",
        "知识产权",
        "综合咨询",
        "人身损害",
        "涉外法律",
        "海事海商",
        "消费权益",
        "抵押担保",
    ]
    seqs = [prompt + policy.encode(x) for x in labels]
    calls = policy.forward_passes
    together = policy.score([seqs])[0]
    spare = 1 + len(policy.free_seqs)  # sequences free for continuations: 17 when nothing generates
    assert policy.forward_passes - calls <= 1 + -(-len(labels) // spare), "the prompt once, then the labels' tokens together"
    alone = []
    for seq in seqs:
        policy.forget_prefix()
        alone.append(policy.score([[seq]])[0][0])
    exact = hf_runtime.service.backend.policy.score([seqs])[0]

    def gap(scored):  # mean |logprob - HF's| over the labels' tokens
        d = [abs(a - b) for t, r in zip(scored, exact) for a, b in zip(t[len(prompt) :], r[len(prompt) :])]
        return sum(d) / len(d)

    # llama.cpp's quantised kernels round differently for other batch shapes (measured: 0.139 together, 0.130 alone)
    assert gap(together) < gap(alone) + 0.04 and gap(together) < TOL
    total = [[sum(x[len(prompt) :]) for x in s] for s in (together, alone, exact)]
    assert len({t.index(max(t)) for t in total}) == 1, "the same label comes first"


def test_rows_that_share_a_prompt_prefix_read_it_once_and_answer_as_alone(llama_runtime):
    """A GRPO group's samples share their whole prompt, a harness's prompts their instructions: a new row copies the
    longest prefix a row of its session holds and decodes only the rest, with the answers it gives alone."""
    from sia.policy.local import GenRequest

    policy = llama_runtime.service.backend.policy
    ids = policy.encode(COUNT)
    other = policy.encode(COUNT.replace("Count from 1 to 10.", "Count backwards from 10 to 1."))
    shared = next(i for i, (a, b) in enumerate(zip(ids, other)) if a != b)
    assert shared >= 8
    alone = [policy.generate([GenRequest(x, 12)])[0] for x in (ids, other)]
    before = policy.decoded_tokens
    together = policy.generate([GenRequest(ids, 12), GenRequest(ids, 12), GenRequest(other, 12), GenRequest(ids, 12, 0.9, seed=3)])
    # less the decodes of generated tokens: all but the last, and the last too when it was followed by the stop token
    read = policy.decoded_tokens - before - sum(len(r.token_ids) - (r.finish_reason != "stop") for r in together)
    assert read == len(ids) + 1 + (len(other) - shared) + 1, "the prompt is read once, the others only where they differ"
    for got, want in zip(together[:3], [alone[0], alone[0], alone[1]]):
        assert got.token_ids == want.token_ids and got.logprobs == pytest.approx(want.logprobs, abs=0.05)
    joined = policy.session()  # a row arriving while another with its prompt is live copies from it
    joined.add([GenRequest(ids, 12)], ["a"])
    joined.step()
    before = policy.decoded_tokens
    joined.add([GenRequest(ids, 12)], ["b"])
    assert policy.decoded_tokens - before == 1
    results = {}
    while joined.active:
        results.update(joined.step())
    assert results["b"].token_ids == alone[0].token_ids

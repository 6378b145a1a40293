"""The policy service: OpenAI-compatible, batched, recording token ids and logprobs."""

import threading

import httpx
import pytest
import torch

from sia.harness.client import LLMClient, LLMError
from sia.policy.service import PolicyService, RemoteBackend


def _client(rt):
    return LLMClient(rt.service.url, rt.model_name(), api_key=rt.service.api_key)


def _door_client(service, door):
    """The client a sandboxed harness gets: the rollout's door (a Unix socket and a token)."""
    return LLMClient("http://sia/v1", door.model, api_key=door.token, unix_socket=door.socket)


def test_concurrent_requests_share_forward_passes(runtime):
    """16 concurrent one-token requests: alone, each needs one forward pass; batched, far fewer."""
    backend = runtime.service.backend
    before_fp, before_batches = backend.policy.forward_passes, backend.batcher.batches
    barrier = threading.Barrier(16)
    replies = []

    def one(i):
        c = _client(runtime)
        barrier.wait()
        replies.append(c.chat(f"Say a number: {i}", max_tokens=1, temperature=0.0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    passes = backend.policy.forward_passes - before_fp
    batches = backend.batcher.batches - before_batches
    assert len(replies) == 16
    assert passes < 16, f"{passes} forward passes for 16 requests: not batched"
    assert batches < 16


def test_calls_are_recorded_per_rollout_with_token_ids_and_logprobs(runtime):
    door = runtime.service.open_door("r-test-1", runtime.model_name())
    c = _door_client(runtime.service, door)
    reply = c.chat("Is 'a wonderful film' positive or negative?", max_tokens=5, temperature=0.0)
    scores = c.logprobs(c.render_chat([{"role": "user", "content": "Say yes."}]), ["Yes", "No"])
    calls = runtime.service.close_door(door).calls
    assert [x["kind"] for x in calls] == ["chat", "score"]
    chat = calls[0]
    comp = chat["completions"][0]
    assert chat["prompt_token_ids"] and comp["token_ids"]
    assert len(comp["logprobs"]) == len(comp["token_ids"]) and all(lp <= 0 for lp in comp["logprobs"])
    assert comp["text"] == reply.text
    assert len(scores) == 2 and all(s < 0 for s in scores)
    assert runtime.service.close_door(door).calls == []
    with pytest.raises(LLMError, match="cannot reach"):  # the rollout's socket is gone with its door
        c.chat("the door is closed now", max_tokens=1)


def test_a_scored_request_is_computed_once_and_served_from_memory_after(runtime):
    """A calibrating harness scores the same content-free prompts for every example: the first request computes them,
    later ones (from any rollout) get the same logprobs without a forward pass, and the record says which was which."""
    prompt = "Content-free input: N/A. Sentiment:"
    doors = [runtime.service.open_door(f"r-memo{i}", runtime.model_name()) for i in range(2)]
    first = _door_client(runtime.service, doors[0]).logprobs(prompt, [" positive", " negative"])
    passes = runtime.service.backend.policy.forward_passes
    again = _door_client(runtime.service, doors[1]).logprobs(prompt, [" positive", " negative"])
    assert again == first and runtime.service.backend.policy.forward_passes == passes
    other = _door_client(runtime.service, doors[1]).logprobs(prompt, [" neutral"])
    assert runtime.service.backend.policy.forward_passes > passes, "other continuations are computed"
    records = [runtime.service.close_door(d).calls for d in doors]
    assert [r["computed"] for r in records[0]] == [True] and [r["computed"] for r in records[1]] == [False, True]
    assert records[1][0]["prompts"] == records[0][0]["prompts"] and len(other) == 1


def test_logprobs_match_a_direct_forward_pass(hf_runtime):
    runtime = hf_runtime
    policy = runtime.service.backend.policy
    c = _client(runtime)
    prompt = c.render_chat([{"role": "user", "content": "Name a colour."}])
    got = c.logprobs(prompt, ["Blue"])[0]
    ids = policy.encode(prompt + "Blue")
    n_prompt = len(policy.encode(prompt))
    with torch.inference_mode(), policy.use("base"):
        logits = policy.model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert got == pytest.approx(float(lp[n_prompt - 1 :].sum()), abs=1e-3)


def test_greedy_generation_logprobs_are_the_argmax(hf_runtime):
    runtime = hf_runtime
    data = _client(runtime).chat("Count: 1, 2, 3,", max_tokens=4, temperature=0.0).raw
    comp = data["choices"][0]
    policy = runtime.service.backend.policy
    ids = data["prompt_token_ids"]
    with torch.inference_mode(), policy.use("base"):
        logits = policy.model(torch.tensor([ids])).logits[0, -1].float()
    assert comp["token_ids"][0] == int(logits.argmax())


def test_openai_sdk_works_against_the_service(runtime):
    import openai

    client = openai.OpenAI(base_url=runtime.service.url, api_key=runtime.service.api_key)
    r = client.chat.completions.create(model=runtime.model_name(), messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=3, temperature=0, logprobs=True)
    assert r.choices[0].message.content is not None and len(r.choices[0].logprobs.content) >= 1
    r2 = client.completions.create(model=runtime.model_name(), prompt="The sky is", max_tokens=0, echo=True, logprobs=0)
    assert r2.choices[0].logprobs.token_logprobs[0] is None and len(r2.choices[0].logprobs.token_logprobs) > 1
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-adapter", messages=[{"role": "user", "content": "Hi"}])


def test_service_rejects_bad_requests_cleanly(runtime):
    url = runtime.service.url
    assert httpx.post(url + "/chat/completions", json={"model": "base", "messages": []}).status_code == 401
    h = {"Authorization": f"Bearer {runtime.service.api_key}"}
    r = httpx.post(url + "/chat/completions", json={"model": "base", "messages": []}, headers=h)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(url + "/chat/completions", content=b"{not json", headers=h)
    assert r.status_code == 400
    r = httpx.post(url + "/completions", json={"model": "base", "prompt": "", "max_tokens": 4}, headers=h)
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]


def test_same_client_through_a_recording_proxy_to_an_external_endpoint(runtime):
    """The remote backend forwards to any OpenAI-compatible URL (here: another sia service) and records."""
    proxy = PolicyService(RemoteBackend(runtime.service.url, runtime.model_name(), api_key=runtime.service.api_key))
    proxy.start()
    try:
        door = proxy.open_door("r-proxy", "anything")
        c = _door_client(proxy, door)
        assert c.chat("Say hi", max_tokens=3).text is not None
        assert len(c.logprobs("The sky is", [" blue", " green"])) == 2
        calls = proxy.close_door(door).calls
        assert [x["kind"] for x in calls] == ["chat", "score"]
        assert calls[0]["completions"][0]["token_ids"]
    finally:
        proxy.stop()
    with pytest.raises(LLMError, match="cannot reach"):
        LLMClient("http://127.0.0.1:9/v1", "m", retries=0).chat("hi")


def test_embeddings_are_served_cached_per_model_and_recorded_per_rollout(hf_runtime):
    """OpenAI's embeddings API: each text's mean final hidden state, as a direct forward pass computes it."""
    import openai
    import torch

    rt = hf_runtime
    client = openai.OpenAI(base_url=rt.service.url, api_key=rt.service.api_key)
    texts = ["a gripping, beautifully acted film", "a dull and lifeless mess"]
    r = client.embeddings.create(model=rt.model_name(), input=texts)
    policy = rt.service.backend.policy
    with torch.inference_mode(), policy.use("base"):
        out = policy.model(torch.tensor([policy.encode(texts[0])]), output_hidden_states=True)
    hidden = out.hidden_states[-1][0].mean(0)
    assert r.data[0].embedding == pytest.approx(hidden.tolist(), abs=1e-4)
    assert len(r.data[1].embedding) == hidden.numel()
    door = rt.service.open_door("r-embed", rt.model_name())
    again = _door_client(rt.service, door).embed([texts[1], "tax law"])
    calls = rt.service.close_door(door).calls
    assert again[0] == r.data[1].embedding
    assert [(c["kind"], c["inputs"], c["computed"]) for c in calls] == [("embed", 2, 1)], "the first text's vector was kept"
    doors = [rt.service.open_door(f"r-embed{i}", rt.model_name()) for i in range(4)]
    pool = [f"demonstration number {i}" for i in range(12)]
    threads = [threading.Thread(target=lambda d=d: _door_client(rt.service, d).embed(pool)) for d in doors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    computed = [c["computed"] for d in doors for c in rt.service.close_door(d).calls]
    assert len(computed) == 4 and sum(computed) == len(pool), "rollouts asking at once share one computation"
    h = {"Authorization": f"Bearer {rt.service.api_key}"}
    bad = httpx.post(rt.service.url + "/embeddings", json={"model": rt.model_name(), "input": [""]}, headers=h)
    assert bad.status_code == 400 and "non-empty" in bad.json()["error"]["message"]


def test_rows_joining_and_leaving_a_decode_session_answer_as_they_would_alone(hf_runtime):
    """Continuous batching on HF with the growing KV cache: rows of different lengths join between steps (left
    padding), leave when done (row selection, trimming), and each row's greedy tokens and logprobs are its own."""
    from sia.policy.local import GenRequest

    policy = hf_runtime.service.backend.policy
    prompts = [policy.encode(policy.render_chat([{"role": "user", "content": c}])) for c in
               ("Count from 1 to 10.", "Name three colours.", "Write the alphabet in capitals, separated by spaces.", "Say hi.")]
    lengths = [30, 6, 70, 3]  # the third row outgrows the cache's spare columns; the others leave early
    alone = [policy.generate([GenRequest(p, n, 0.0, 1.0, [], None)])[0] for p, n in zip(prompts, lengths)]
    session, out = policy.session(None), {}
    out.update(session.add([GenRequest(p, n, 0.0, 1.0, [], None) for p, n in zip(prompts[:2], lengths[:2])], [0, 1]))
    for step in range(200):
        if step == 3:
            out.update(session.add([GenRequest(prompts[2], lengths[2], 0.0, 1.0, [], None)], [2]))
        if step == 8:
            out.update(session.add([GenRequest(prompts[3], lengths[3], 0.0, 1.0, [], None)], [3]))
        if not session.active and step > 8:
            break
        out.update(session.step())
    assert sorted(out) == [0, 1, 2, 3]
    for i, a in enumerate(alone):
        assert out[i].token_ids == a.token_ids, i
        assert out[i].logprobs == pytest.approx(a.logprobs, abs=2e-3)

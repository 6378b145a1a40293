"""Tokens/s of sia's policy service on the embedded model, on both engines, against llama.cpp used directly.

Engines on the same prompts, in one run: sia's policy service with the
HF/PyTorch backend (fp32), with the llama.cpp backend (its default Q8_0
re-encoding of the GGUF, batched), with the llama.cpp backend on the Q4_1 file
as it is, and llama-cpp-python's own `Llama` class on the Q4_1 file. Each
client sends completion requests with a fixed token budget (sampled, seeded);
throughput is completion tokens over wall time. The `Llama` class serves one
sequence at a time, so its concurrent clients take turns on one lock, as they
would behind its server. Printed: a table per engine and concurrency, and the
ratios the llama.cpp backend is judged by (against raw llama.cpp at 1, and
against its own rate at 1). All engines are loaded at once and take turns in
every round, so a noisy machine slows them alike; tok/s is the median over
rounds. The benchmark records numbers; it asserts nothing.

    python bench/policy_throughput.py [--max-tokens 48] [--requests 16] [--rounds 3] [--engines hf,llamacpp,raw] [--levels 1,4,16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [f"Write a short story about a {thing}. Once upon a time," for thing in
           ("dragon", "robot", "river", "baker", "comet", "lighthouse", "fox", "violin")]
LEVELS = (1, 4, 16)
THREADS = 1


def _clients(concurrency: int, requests: int, one) -> tuple[float, int]:
    """Run `one(k, i) -> tokens` from `concurrency` threads, `requests` calls in all; (tokens/s, tokens)."""
    tokens = [0] * concurrency
    per_client = max(1, requests // concurrency)
    barrier = threading.Barrier(concurrency)

    def client(k: int) -> None:
        barrier.wait()
        for i in range(per_client):
            tokens[k] += one(k, i)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(tokens) / (time.perf_counter() - t0), sum(tokens)


def _runtime(engine: str):
    from sia.policy.runtime import PolicyRuntime

    if engine != "llamacpp-file":
        return PolicyRuntime.local(backend=engine)
    from sia.policy.llama import LlamaPolicy, LlamaPolicyConfig
    from sia.policy.service import LocalBackend, PolicyService

    policy = LlamaPolicy(LlamaPolicyConfig(weights="file"))
    service = PolicyService(LocalBackend(policy, max_batch=policy.config.n_seq - 2))
    service.start()
    return PolicyRuntime(service)


class Service:
    """One engine behind sia's policy service, started once for the whole run."""

    def __init__(self, engine: str) -> None:
        self.rt = _runtime(engine).__enter__()

    def one(self, k: int, i: int, max_tokens: int) -> int:
        from sia.harness.client import LLMClient

        client = LLMClient(self.rt.service.url, self.rt.model_name(), api_key=self.rt.service.api_key)  # one connection each
        r = client.complete(PROMPTS[(k + i) % len(PROMPTS)], max_tokens=max_tokens, temperature=0.8, seed=k * 1000 + i)
        return r.raw["usage"]["completion_tokens"]

    def passes(self) -> int:
        return self.rt.service.backend.policy.forward_passes

    def close(self) -> None:
        self.rt.__exit__(None, None, None)


class Raw:
    """llama-cpp-python's own `Llama` class: one sequence at a time, so concurrent clients take turns on a lock.

    `q8`: on the Q8_0 re-encoding that sia's backend serves by default, so that the backend's serving overhead is
    measured apart from its choice of weights (Q8_0 reads about twice the bytes of Q4_1 per token at one stream)."""

    def __init__(self, q8: bool = False) -> None:
        import llama_cpp.llama_cpp as bindings
        from llama_cpp import Llama

        from sia.policy.embedded import gguf_path
        from sia.policy.llama import EXTRA_BUFFERS

        defaults = bindings.llama_model_default_params

        def params():  # the same weight layout as sia's engine (see EXTRA_BUFFERS)
            p = defaults()
            p.use_extra_bufts = EXTRA_BUFFERS
            return p

        bindings.llama_model_default_params = params  # `Llama` reads it from the bindings module, not the package
        path = gguf_path()
        if q8:
            from sia.policy.gguf_lora import requantized

            path = requantized(bindings, path, "q8_0")
        self.llm = Llama(model_path=str(path), n_ctx=2048, n_threads=THREADS, verbose=False, seed=0)
        self.lock = threading.Lock()

    def one(self, k: int, i: int, max_tokens: int) -> int:
        with self.lock:
            out = self.llm(PROMPTS[(k + i) % len(PROMPTS)], max_tokens=max_tokens, temperature=0.8, seed=k * 1000 + i)
        return out["usage"]["completion_tokens"]

    def passes(self) -> int:
        return 0

    def close(self) -> None:
        self.llm.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each reports its median over rounds")
    ap.add_argument("--engines", default="hf,llamacpp,llamacpp-file,raw,raw-q8")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, the first one the base of ratios")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="compute threads of every engine (default: all cores; the bench wants a quiet machine)")
    args = ap.parse_args()
    from sia.policy.choice import llama_missing

    engines = args.engines.split(",")
    if llama_missing():
        print(f"llama.cpp: {llama_missing()}; only the HF backend is measured")
        engines = [e for e in engines if e == "hf"]
    global THREADS
    levels = [int(c) for c in args.levels.split(",")]
    threads = THREADS = args.threads
    os.environ["SIA_THREADS"] = str(threads)  # every engine with the same threads
    names = {"hf": "sia service, HF fp32", "llamacpp": "sia service, llama.cpp", "llamacpp-file": "sia service, llama.cpp Q4_1",
             "raw": "llama.cpp direct (Llama)", "raw-q8": "llama.cpp direct, Q8_0"}
    print(f"starting {', '.join(names[e] for e in engines)}...", flush=True)
    live = {e: Raw(q8=e == "raw-q8") if e.startswith("raw") else Service(e) for e in engines}
    samples: dict[tuple[str, int], list[tuple[float, int, int]]] = {}
    try:
        for _e, engine in live.items():
            engine.one(0, 0, 4)  # warm-up
        for r in range(args.rounds):  # engines take turns within every round, so a noisy neighbour hits them alike
            for c in levels:
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for e in order:
                    p0 = live[e].passes()
                    tps, toks = _clients(c, max(args.requests, c), lambda k, i, e=e: live[e].one(k, i, args.max_tokens))
                    samples.setdefault((e, c), []).append((tps, toks, live[e].passes() - p0))
                    print(f"  round {r + 1}: {names[e]} c={c}: {tps:.1f} tok/s", flush=True)
    finally:
        for engine in live.values():
            engine.close()
    results = {e: [(c, statistics.median(x[0] for x in samples[e, c]), sum(x[1] for x in samples[e, c]),
                    sum(x[2] for x in samples[e, c])) for c in levels] for e in engines}
    print(f"\nembedded SmolLM2-135M-Instruct, GGUF Q4_1 for llama.cpp, {threads} threads, max_tokens={args.max_tokens}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"rounds {args.rounds}; tok/s is the median over rounds, tokens and forward passes their sums")
    print(f"{'engine':<28}{'concurrency':>12}{'tokens':>8}{'fwd passes':>12}{'tok/s':>9}{'vs own c=1':>12}")
    for e, rows in results.items():
        for c, tps, toks, fps in rows:
            print(f"{names[e]:<28}{c:>12}{toks:>8}{fps or '':>12}{tps:>9.1f}{tps / rows[0][1]:>11.2f}x")
    if "llamacpp" in results and "raw" in results:
        ll, raw = results["llamacpp"], results["raw"]
        print(f"\nllama.cpp backend c=1 / raw llama.cpp c=1: {ll[0][1] / raw[0][1]:.2f}  (target >= 0.9)")
        if levels[-1] == 16 and levels[0] == 1:
            print(f"llama.cpp backend c=16 / its c=1:          {ll[-1][1] / ll[0][1]:.2f}  (target >= 3)")
    for ours, theirs, what in (("llamacpp", "raw-q8", "Q8_0 backend / raw on the same Q8_0"),
                               ("llamacpp-file", "raw", "Q4_1 backend / raw on the same Q4_1")):
        if ours in results and theirs in results:
            print(f"{what} at c=1: {results[ours][0][1] / results[theirs][0][1]:.2f}")
    if "llamacpp" in results and "hf" in results:
        for (c, a, _, _), (_, b, _, _) in zip(results["llamacpp"], results["hf"]):
            print(f"llama.cpp backend / HF backend at c={c}: {a / b:.2f}")


if __name__ == "__main__":
    main()

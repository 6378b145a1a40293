"""Tokens/s of sia's policy service on the embedded model at concurrency 1, 4 and 16.

Each client sends completion requests over HTTP with a fixed token budget;
throughput is completion tokens over wall time. Where llama-cpp-python is
installed, the same prompts run through llama.cpp on the same GGUF (one stream,
as llama-cpp-python serves one sequence at a time) and the ratio is printed.
The benchmark records numbers; it asserts nothing.

    python bench/policy_throughput.py [--max-tokens 48] [--requests 16]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [f"Write a short story about a {thing}. Once upon a time," for thing in
           ("dragon", "robot", "river", "baker", "comet", "lighthouse", "fox", "violin")]


def bench_service(concurrency: int, requests: int, max_tokens: int) -> tuple[float, int, int]:
    from sia.harness.client import LLMClient

    rt = RUNTIME
    tokens = [0] * concurrency
    per_client = max(1, requests // concurrency)
    barrier = threading.Barrier(concurrency)

    def client(k: int) -> None:
        c = LLMClient(rt.service.url, rt.model_name(), api_key=rt.service.api_key)
        barrier.wait()
        for i in range(per_client):
            r = c.complete(PROMPTS[(k + i) % len(PROMPTS)], max_tokens=max_tokens, temperature=0.8, seed=k * 1000 + i)
            tokens[k] += r.raw["usage"]["completion_tokens"]

    fp0 = rt.service.backend.policy.forward_passes
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    return sum(tokens) / dt, sum(tokens), rt.service.backend.policy.forward_passes - fp0


def bench_llama_cpp(requests: int, max_tokens: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from sia.policy.embedded import gguf_path

    llm = Llama(model_path=str(gguf_path()), n_ctx=2048, n_threads=os.cpu_count(), verbose=False, seed=0)
    total, t0 = 0, time.perf_counter()
    for i in range(requests):
        out = llm(PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0.8)
        total += out["usage"]["completion_tokens"]
    return total / (time.perf_counter() - t0)


def main() -> None:
    global RUNTIME
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    args = ap.parse_args()
    from sia.policy.runtime import PolicyRuntime

    RUNTIME = PolicyRuntime.local()
    try:
        bench_service(1, 1, 4)  # warm-up
        rows = []
        for c in (1, 4, 16):
            tps, toks, fps = bench_service(c, max(args.requests, c), args.max_tokens)
            rows.append((c, tps, toks, fps))
    finally:
        RUNTIME.close()
    llama = bench_llama_cpp(max(4, args.requests // 4), args.max_tokens)
    base = rows[0][1]
    print(f"\npolicy service, {RUNTIME.model_name()} (fp32, CPU threads={os.cpu_count()}), max_tokens={args.max_tokens}")
    print(f"{'engine':<22}{'concurrency':>12}{'tokens':>8}{'fwd passes':>12}{'tok/s':>9}{'vs c=1':>8}")
    for c, tps, toks, fps in rows:
        print(f"{'sia policy service':<22}{c:>12}{toks:>8}{fps:>12}{tps:>9.1f}{tps / base:>7.2f}x")
    if llama is None:
        print("llama.cpp: llama-cpp-python not installed; `pip install llama-cpp-python` to compare on the same GGUF")
    else:
        print(f"{'llama.cpp (GGUF Q4_1)':<22}{1:>12}{'':>8}{'':>12}{llama:>9.1f}")
        for c, tps, _, _ in rows:
            print(f"ratio sia c={c} / llama.cpp c=1: {tps / llama:.2f}")


if __name__ == "__main__":
    main()

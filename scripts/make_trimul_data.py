"""Write the trimul task's examples: one configuration each, with a secret seed for the grader.

CPU configurations keep one grading to a few seconds (sequence length 32 to
128); each example also carries a configuration of the GPU MODE leaderboard's
range, used when CUDA is present. Distinct configurations only, so train, val
and test never share one. Run from the repository root:

    python scripts/make_trimul_data.py
"""

import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "sia" / "plugins" / "tasks" / "trimul"
GPU = [dict(bs=2, seqlen=256, dim=128), dict(bs=1, seqlen=768, dim=128), dict(bs=2, seqlen=256, dim=384),
       dict(bs=1, seqlen=512, dim=128), dict(bs=1, seqlen=1024, dim=128), dict(bs=1, seqlen=768, dim=384),
       dict(bs=1, seqlen=1024, dim=384)]


def main() -> None:
    rng = random.Random(0)
    grid = [dict(bs=b, seqlen=n, dim=d, hiddendim=h, nomask=m, distribution=dist)
            for b, n, d, h, m, dist in itertools.product((1, 2), (32, 48, 64, 96, 128), (32, 64, 128), (32, 64), (True, False),
                                                         ("normal", "cauchy"))
            if b * n * n * (5 * d * h + n * h + d * h) <= 1.2e9]
    rng.shuffle(grid)
    configs = grid[:60]
    with open(OUT / "inputs.jsonl", "w") as fi, open(OUT / "labels.jsonl", "w") as fl:
        for i, c in enumerate(configs):
            g = GPU[i % len(GPU)]
            cuda = dict(g, hiddendim=128, nomask=c["nomask"], distribution=c["distribution"])
            fi.write(json.dumps({"id": f"trimul-{i:03d}", "config": c, "cuda_config": cuda}) + "\n")
            fl.write(json.dumps({"id": f"trimul-{i:03d}", "seed": rng.randrange(1, 2**31)}) + "\n")


if __name__ == "__main__":
    main()

"""Rebuild src/sia/tasks/sentiment/{inputs,labels}.jsonl from the vaderSentiment sdist.

Source: vaderSentiment 3.3.2 sdist (MIT), file additional_resources/hutto_ICWSM_2014.tar.gz,
member hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt (id, mean human rating, text).
We keep clearly polar snippets (|rating| >= 1.0) and draw a balanced, seeded sample of 800.

Usage: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d DL
       python scripts/extract_sentiment.py DL/vaderSentiment-3.3.2.tar.gz
"""

import io
import json
import random
import sys
import tarfile
from pathlib import Path

N_PER_CLASS = 400
OUT = Path(__file__).resolve().parents[1] / "src/sia/tasks/sentiment"


def main(sdist: str) -> None:
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read().decode("utf-8")
    pos, neg = [], []
    for line in raw.splitlines():
        parts = line.strip().split("\t")
        if len(parts) != 3:
            continue
        sid, rating, text = parts[0], float(parts[1]), parts[2].replace("''", '"').strip()
        if abs(rating) >= 1.0 and 20 <= len(text) <= 300:
            (pos if rating > 0 else neg).append((f"mr-{int(sid):05d}", text, "positive" if rating > 0 else "negative"))
    rng = random.Random(0)
    rows = rng.sample(pos, N_PER_CLASS) + rng.sample(neg, N_PER_CLASS)
    rows.sort()
    with open(OUT / "inputs.jsonl", "w", encoding="utf-8") as fi, open(OUT / "labels.jsonl", "w", encoding="utf-8") as fl:
        for sid, text, label in rows:
            fi.write(json.dumps({"id": sid, "text": text}, ensure_ascii=False) + "\n")
            fl.write(json.dumps({"id": sid, "label": label}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} examples to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])

"""Data for magic-denoise: PBMC counts from scanpy's `10x_pbmc68k_reduced.h5ad`, in the scanpy wheel fetched at setup.

The file keeps log-normalised values; integer counts are recovered as
round(expm1(raw) / the cell's smallest nonzero value). Cells are split into
train, val and test pools (300, 200, 200); each example is 150 cells of its
pool and 250 of the 765 genes, drawn with a fixed seed. Its molecules are then
split in two by binomial thinning with the grader's seed: the denoiser sees
one half (inputs.jsonl), the grader keeps the other (labels.jsonl).
"""

import json
import zipfile
from pathlib import Path

import numpy as np

from sia.errors import SetupError
from sia.paths import downloads_dir

WHEEL_GLOB = "scanpy-*.whl"
MEMBER = "scanpy/datasets/10x_pbmc68k_reduced.h5ad"
POOLS = {"train": 300, "val": 200, "test": 200}
EXAMPLES = {"train": 24, "val": 16, "test": 16}
CELLS, GENES = 150, 250


def _local(name):
    """A module of this task folder (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"sia_task_magic_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counts_from_wheel():
    import io

    import h5py
    import scipy.sparse as sp

    wheels = sorted(downloads_dir().glob(WHEEL_GLOB))
    if not wheels:
        raise SetupError(f"no {WHEEL_GLOB} in {downloads_dir()}",
                         f"run `pip download --no-deps scanpy==1.11.5 -d {downloads_dir()}` (make does this)")
    with zipfile.ZipFile(wheels[-1]) as zf:
        data = zf.read(MEMBER)
    with h5py.File(io.BytesIO(data), "r") as f:
        g = f["raw.X"]
        shape = tuple(int(x) for x in g.attrs["h5sparse_shape"])
        raw = sp.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape).toarray()
    e = np.expm1(raw.astype(np.float64))
    mins = np.array([row[row > 0].min() for row in e])
    return np.rint(e / mins[:, None]).astype(np.int64)


def prepare(dest: Path) -> None:
    counts = counts_from_wheel()
    rng = np.random.default_rng(0)
    order = rng.permutation(counts.shape[0])
    pools, start = {}, 0
    for split, n in POOLS.items():
        pools[split] = order[start:start + n]
        start += n
    thin = _local("denoise").split

    tmp_in, tmp_lab = dest / "inputs.jsonl.tmp", dest / "labels.jsonl.tmp"
    with open(tmp_in, "w") as fi, open(tmp_lab, "w") as fl:
        for split, n_ex in EXAMPLES.items():
            for i in range(n_ex):
                cells = rng.choice(pools[split], CELLS, replace=False)
                sub = counts[cells]
                genes = np.sort(rng.choice(np.flatnonzero(sub.sum(0) > 0), GENES, replace=False))
                seen, held = thin(sub[:, genes], int(rng.integers(1, 2**31)))
                eid = f"pbmc-{split}-{i:02d}"
                fi.write(json.dumps({"id": eid, "pool": split, "counts": seen.tolist()}) + "\n")
                fl.write(json.dumps({"id": eid, "held": held.tolist()}) + "\n")
    tmp_in.replace(dest / "inputs.jsonl")
    tmp_lab.replace(dest / "labels.jsonl")

"""The FAISS side of `cograft bench similar`: exact top-k by inner product (IndexFlatIP) over
the bench's vectors, timed the way the bench times cograft's scan.

Reads the base and query matrices the bench wrote (raw little-endian f32, row-major, unit
rows), searches the queries in batches of each given size, and prints one JSON object: per batch
size the seconds of every batch, and the ids of the first query's hits (so the bench can check
both engines found the same neighbours). Each batch size runs twice, with FAISS's default
`distance_compute_blas_threshold` (128000 in 1.15: batches scan query by query with its SIMD
kernels) and with 20 (its older default: batches of 20 queries or more go through BLAS sgemm);
the faster of the two is the peer's figure, and both are reported.
"""

import argparse
import json
import time

import faiss
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--batches", required=True, help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args()
    faiss.omp_set_num_threads(a.threads)
    base = np.fromfile(a.base, dtype="<f4").reshape(-1, a.dim)
    queries = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim)
    index = faiss.IndexFlatIP(a.dim)
    index.add(base)
    default_threshold = faiss.cvar.distance_compute_blas_threshold
    out = {"faiss": faiss.__version__, "threads": a.threads, "batches": {}, "configs": {}}
    for threshold in (default_threshold, 20):
        faiss.cvar.distance_compute_blas_threshold = threshold
        for size in (int(s) for s in a.batches.split(",")):
            times = []
            for start in range(0, len(queries) - size + 1, size):
                batch = queries[start : start + size]
                began = time.perf_counter()
                index.search(batch, a.k)
                times.append(time.perf_counter() - began)
            out["configs"].setdefault(str(threshold), {})[str(size)] = sum(times)
            best = out["batches"].get(str(size))
            if best is None or sum(times) < sum(best):
                out["batches"][str(size)] = times
    faiss.cvar.distance_compute_blas_threshold = default_threshold
    _, ids = index.search(queries[:1], a.k)
    out["first_hits"] = [int(i) for i in ids[0]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Benchmark 1: k-means for P-TAPT pseudo-labels, FAISS as this project runs it against
scikit-learn's MiniBatchKMeans as fairseq's HuBERT recipe runs it.

Features: the 512-d, 50 Hz frame features of EmoDB, dumped by the project's own
``dump_split`` from a P-TAPT stage-1 frame emotion model (``ser_frame_emotion``;
its wav2vec 2.0 backbone has the standard CNN kernels and strides at 256
channels and 2 Transformer layers of 384) with random weights: nothing trained
exists here, but the architecture and the width k-means sees are the real
ones. Dumped once into ``--cache-dir``. For each K the features are repeated
(each copy in its own random order) or sampled at an even stride to a size.

Ours: ``fairseq_ser.clustering.kmeans.train_kmeans`` on the sample
``learn_kmeans`` draws (256 frames per centroid, at least 65,536), 20
iterations, then every frame searched in a FAISS flat index in chunks, as
``assign_shard`` does. Theirs: ``MiniBatchKMeans`` with the recipe's settings
(examples/hubert/simple_kmeans/learn_kmeans.py) fitted on all frames, then
``predict``, except for its starts (see DEFAULT_RUNS). Both start from the same
float32 array in memory. The objective of both is computed by one function:
the mean squared distance of every frame to its assigned centroid. Before any
time is printed, both label sets are checked against a brute-force
nearest-centroid search and the objectives against each other.

The second table varies our knobs one at a time: BLAS kernels, threads,
iterations, frames per centroid, the sample floor of small K, assignment chunk.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (EMODB, REPO, emodb_manifest, frame_model_checkpoint, machine_description,  # noqa: E402
                    print_summary, print_table)

sys.path.insert(0, str(REPO))

# examples/hubert/simple_kmeans/learn_kmeans.py: its command-line defaults
RECIPE = dict(init="k-means++", max_iter=100, batch_size=10000, tol=0.0, max_no_improvement=100, n_init=20,
              reassignment_ratio=0.0, compute_labels=False)
FEATURE_MODEL = dict(channels=256, layers=2, embed=384, frame_dim=512)
# K -> (frames as a multiple of EmoDB's, n_init and init of MiniBatchKMeans). The recipe's n_init = 20
# k-means++ does not fit the time budget: for float32 input scikit-learn computes each k-means++
# centre's distances to its 30,000-frame init sample in float64 chunks (0.1 to 0.4 s per centre on
# 2 cores), so K = 64 has one k-means++ start and the larger K three random starts (as FAISS starts).
DEFAULT_RUNS = {64: (4.0, 1, "k-means++"), 512: (1.0, 3, "random"), 4096: (1.0, 3, "random")}
QUICK_RUNS = {64: (1.0, 1, "k-means++"), 512: (0.25, 3, "random")}
DEFAULT_TUNING = (512, 0.5)
QUICK_TUNING = (512, 0.25)
CHUNKS = (4096, 16384, 65536, 100_000)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, K = 64 and 512 only (about two minutes on 2 cores)")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fairseq-ser-bench",
                   help="where the frame model and EmoDB's dumped features are kept between runs "
                   "(default: %(default)s)")
    p.add_argument("--ks", type=int, nargs="+", help="only these K (of those the chosen mode runs)")
    p.add_argument("--max-objective-ratio", type=float, default=1.05,
                   help="fail unless our objective is at most this times scikit-learn's (default: %(default)s)")
    p.add_argument("--no-tuning", action="store_true", help="skip the table of our knobs")
    p.add_argument("--full-recipe", action="store_true",
                   help="scikit-learn with the recipe's own n_init=20 and k-means++ at every K (hours on 2 cores)")
    return p.parse_args(argv)


def emodb_features(cache_dir: Path) -> np.ndarray:
    """EmoDB's frame features as float32, dumped by the project's ``dump_split`` on the first call."""
    import torch

    from fairseq_ser.clustering.dump import dump_split, load_shard, read_shard_meta, shard_prefix
    from fairseq_ser.clustering.features import load_extractor

    label_dir = cache_dir / "kmeans_features"
    if read_shard_meta(shard_prefix(str(label_dir), "train", 0, 1)) is None:
        ckpt = frame_model_checkpoint(cache_dir / "frame_model_c256.pt", **FEATURE_MODEL)
        data = emodb_manifest(cache_dir / "emodb_1x", 1)
        print(f"dumping EmoDB's frame features once into {label_dir} ...", flush=True)
        start, threads = time.perf_counter(), torch.get_num_threads()
        torch.set_num_threads(1)  # on 2 shared cores one thread extracted 4 to 6 times faster than two
        try:
            with warnings.catch_warnings():  # fairseq's weight_norm deprecation
                warnings.simplefilter("ignore", FutureWarning)
                extractor = load_extractor(str(ckpt))
            logging.getLogger().setLevel(logging.WARNING)  # fairseq's imports turn on debug logging
            dump_split(extractor, str(data), "train", str(label_dir), progress=False)
        finally:
            torch.set_num_threads(threads)
        print(f"dumped in {time.perf_counter() - start:.0f} s", flush=True)
    shard = load_shard(str(label_dir), "train", 0, 1)
    return shard.rows(0, shard.meta["num_frames"])


def resize(features: np.ndarray, frames: int) -> np.ndarray:
    """``frames`` rows: copies of the features, each in its own random order (an even-stride sample
    of plain tiles would hit the same frames in every copy), or an even-stride sample of them."""
    from fairseq_ser.clustering.kmeans import sample_index

    if frames <= len(features):
        return features[sample_index(len(features), frames, seed=0)]
    rng = np.random.default_rng(0)
    copies = -(-frames // len(features))
    return np.concatenate([features] + [features[rng.permutation(len(features))] for _ in range(copies - 1)])[:frames]


def blas_kernel() -> str:
    """The kernels FAISS's OpenBLAS runs (as threadpoolctl reports them), once FAISS is loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    found = [i.get("architecture") or "?" for i in threadpool_info()
             if i.get("internal_api") == "openblas" and "faiss" in i.get("filepath", "")]
    return found[0] if found else "?"


def assign_all(centroids: np.ndarray, x: np.ndarray, chunk: int) -> np.ndarray:
    """Nearest centroid of every row, ``chunk`` rows per FAISS search, as ``assign_shard`` labels a shard."""
    from fairseq_ser.clustering.assign import build_index

    index = build_index(centroids)
    labels = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), chunk):
        _, ids = index.search(x[a:a + chunk], 1)
        labels[a:a + chunk] = ids[:, 0]
    return labels


def run_ours(x, k, niter=20, points_per_centroid=256, min_frames=None, threads=None, chunk=None, seed=1):
    """Train as ``learn_kmeans`` does (its sample, then ``train_kmeans``), assign every row; (centroids, labels, s, s)."""
    from fairseq_ser.clustering.assign import DEFAULT_CHUNK_FRAMES
    from fairseq_ser.clustering.faiss_import import import_faiss
    from fairseq_ser.clustering.kmeans import train_kmeans

    faiss = import_faiss()
    default_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or default_threads)
    try:
        start = time.perf_counter()
        sample = x[sample_rows(len(x), k, points_per_centroid, min_frames, seed)]
        centroids, _, _ = train_kmeans(sample, k, niter, seed)
        del sample
        trained = time.perf_counter()
        labels = assign_all(centroids, x, chunk or DEFAULT_CHUNK_FRAMES)
        return centroids, labels, trained - start, time.perf_counter() - trained
    finally:
        faiss.omp_set_num_threads(default_threads)


def sample_rows(total, k, points_per_centroid=256, min_frames=None, seed=1):
    """The rows ``learn_kmeans`` samples for K (its defaults otherwise: all frames, at most 1M)."""
    from fairseq_ser.clustering.kmeans import DEFAULT_MIN_SAMPLE_FRAMES, sample_index, sample_size

    min_frames = DEFAULT_MIN_SAMPLE_FRAMES if min_frames is None else min_frames
    return sample_index(total, sample_size(total, 1.0, 1_000_000, k, points_per_centroid, min_frames), seed)


def run_sklearn(x, k, n_init, init, seed=1):
    """MiniBatchKMeans with the recipe's settings on every row, then ``predict``; (centroids, labels, s, s, steps)."""
    from sklearn.cluster import MiniBatchKMeans

    start = time.perf_counter()
    settings = {**RECIPE, "n_init": n_init, "init": init}
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, verbose=0, **settings).fit(x)
    trained = time.perf_counter()
    labels = km.predict(x)
    return (np.asarray(km.cluster_centers_, dtype=np.float32), labels.astype(np.int64),
            trained - start, time.perf_counter() - trained, int(km.n_steps_))


def objective(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, chunk: int = 65536) -> float:
    """Mean squared distance of every row to its assigned centroid (accumulated in float64)."""
    total = 0.0
    for a in range(0, len(x), chunk):
        diff = x[a:a + chunk] - centroids[labels[a:a + chunk]]
        total += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
    return total / len(x)


class CheckFailed(Exception):
    pass


def check_labels(name, x, centroids, labels, k, rows=2000):
    """Labels in range, and nearest by a float64 brute-force search on ``rows`` random rows (up to float32 ties)."""
    if labels.shape != (len(x),) or labels.min() < 0 or labels.max() >= k:
        raise CheckFailed(f"{name}: labels of shape {labels.shape} in [{labels.min()}, {labels.max()}], "
                          f"expected ({len(x)},) in [0, {k})")
    pick = np.random.default_rng(0).choice(len(x), min(rows, len(x)), replace=False)
    q, c = x[pick].astype(np.float64), centroids.astype(np.float64)
    dist = (q * q).sum(1, keepdims=True) - 2 * q @ c.T + (c * c).sum(1)
    best, got = dist.min(1), dist[np.arange(len(pick)), labels[pick]]
    near = got <= best + 1e-3 * np.abs(best) + 1e-6
    if near.mean() < 0.995:
        raise CheckFailed(f"{name}: only {near.mean():.1%} of {len(pick)} checked frames got their nearest centroid")


def fmt(seconds):
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def compare(features, runs, max_ratio):
    """Table 1: both methods at every K; returns the summary ratios."""
    rows, summary, ratios = [], {}, []
    for k, (times, n_init, init) in runs.items():
        x = resize(features, int(round(times * len(features))))
        print(f"K={k}: {len(x)} frames ({times:g}x EmoDB) ...", flush=True)
        c_ours, l_ours, train_ours, assign_ours = run_ours(x, k)
        print(f"  FAISS: train {train_ours:.1f} s, assign {assign_ours:.1f} s", flush=True)
        c_sk, l_sk, train_sk, assign_sk, steps = run_sklearn(x, k, n_init, init)
        print(f"  scikit-learn: train {train_sk:.1f} s ({steps} steps), assign {assign_sk:.1f} s", flush=True)
        check_labels(f"K={k} FAISS", x, c_ours, l_ours, k)
        check_labels(f"K={k} scikit-learn", x, c_sk, l_sk, k)
        obj_ours, obj_sk = objective(x, c_ours, l_ours), objective(x, c_sk, l_sk)
        ratio = obj_ours / obj_sk
        if not (np.isfinite(obj_ours) and np.isfinite(obj_sk) and obj_sk > 0 and 0.5 <= ratio <= max_ratio):
            raise CheckFailed(f"K={k}: objective {obj_ours:.6g} (FAISS) against {obj_sk:.6g} (scikit-learn): "
                              f"ratio {ratio:.3f} outside [0.5, {max_ratio}]")
        ratios.append(ratio)
        speedup = (train_sk + assign_sk) / (train_ours + assign_ours)
        summary[f"K{k}_speedup"] = speedup
        sample = len(sample_rows(len(x), k))
        rows.append([k, f"{len(x):,} ({times:g}x)", f"{sample:,}", f"{init}, {n_init} / {steps}", fmt(train_ours),
                     fmt(train_sk), fmt(assign_ours), fmt(assign_sk), f"**{speedup:.1f}x**", f"{obj_ours:.4g}",
                     f"{obj_sk:.4g}", f"{ratio:.3f}"])
    print_table("k-means: FAISS (this project) vs scikit-learn MiniBatchKMeans (fairseq HuBERT recipe)",
                ["K", "frames", "FAISS sample", "sklearn init, n_init / steps", "train s FAISS", "train s sklearn",
                 "assign s FAISS", "assign s sklearn", "speedup", "objective FAISS", "objective sklearn",
                 "ratio"], rows)
    summary["objective_ratio_max"] = max(ratios)
    return summary


BLAS_PROBE = """
import json, sys
mode, data, k, here, repo = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
if mode == "own":
    import faiss  # before fairseq_ser: OpenBLAS picks its kernels itself
sys.path[:0] = [here, repo]
import numpy as np
from bench_kmeans import blas_kernel, objective, run_ours
x = np.load(data)
c, labels, train, assign = run_ours(x, k)
print(json.dumps({"train": train, "assign": assign, "objective": objective(x, c, labels), "blas": blas_kernel()}))
"""


def blas_probe(mode, x, k, tmp):
    """Train and assign in a fresh process: FAISS's OpenBLAS choosing its kernels itself, or ours choosing them."""
    path = Path(tmp) / "tuning.npy"
    if not path.exists():
        np.save(path, x)
    env = {key: v for key, v in os.environ.items() if key != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", BLAS_PROBE, mode, str(path), str(k), str(HERE), str(REPO)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tuning(features, k, times):
    """Table 2: our knobs one at a time; returns the ratios for the summary."""
    from fairseq_ser.clustering.assign import DEFAULT_CHUNK_FRAMES

    rows = []

    def add(label, x, kk, base=None, **kw):
        c, labels, train, assign = run_ours(x, kk, **kw)
        check_labels(label, x, c, labels, kk)
        obj = objective(x, c, labels)
        sample = len(sample_rows(len(x), kk, kw.get("points_per_centroid", 256), kw.get("min_frames")))
        rows.append([label, kk, f"{len(x):,}", f"{sample:,}", fmt(train), fmt(assign), f"{obj:.4g}",
                     f"{obj / (base or obj):.3f}"])
        return c, obj, train

    x = resize(features, int(round(times * len(features))))
    print(f"tuning at K={k}, {len(x)} frames ...", flush=True)
    c, obj0, _ = add(f"default: 20 iterations, <= 256 frames/centroid, all threads, chunks of "
                     f"{DEFAULT_CHUNK_FRAMES:,}", x, k)
    with tempfile.TemporaryDirectory() as tmp:
        probes = {mode: blas_probe(mode, x, k, tmp) for mode in ("own", "ours")}
    for mode, label in (("own", "FAISS's OpenBLAS picks its kernels (before)"),
                        ("ours", "import_faiss picks them (now), also in a fresh process")):
        p = probes[mode]
        rows.append([f"{label}: {p['blas']}", k, f"{len(x):,}", f"{len(sample_rows(len(x), k)):,}", fmt(p["train"]),
                     fmt(p["assign"]), f"{p['objective']:.4g}", f"{p['objective'] / obj0:.3f}"])
    add("1 thread", x, k, obj0, threads=1)
    for niter in (10, 40):
        add(f"{niter} iterations", x, k, obj0, niter=niter)
    if 32 * k < len(x):
        add("<= 32 frames/centroid", x, k, obj0, points_per_centroid=32, min_frames=0)
    # small K: 256 frames per centroid only (before) against the floor of 65,536 frames (now)
    _, before, _ = add("256 frames/centroid only (before)", features, 64, min_frames=0)
    _, now, _ = add("at least 65,536 frames (now)", features, 64, before)
    # assignment of 2x EmoDB, more frames than any chunk holds; the best of 3 runs, as one run is noisy
    x = resize(features, 2 * len(features))
    reference = None
    for chunk in CHUNKS:
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            labels = assign_all(c, x, chunk)
            seconds.append(time.perf_counter() - start)
        seconds = min(seconds)
        reference = labels if reference is None else reference
        if not np.array_equal(labels, reference):
            raise CheckFailed(f"assignment in chunks of {chunk} differs from chunks of {CHUNKS[0]}")
        # what assign_shard holds per chunk: the float16 rows mapped, their float32 copy
        rows.append([f"assign in chunks of {chunk:,} ({chunk * x.shape[1] * 6 / 2**20:.0f} MiB of rows)", k,
                     f"{len(x):,}", "", "", fmt(seconds), "", ""])
    print_table("Our knobs, one at a time (vs default: objective over the default's at that K)",
                ["setting", "K", "frames", "frames trained on", "train s", "assign s", "objective",
                 "vs default"], rows)
    return {"blas_speedup": probes["own"]["train"] / probes["ours"]["train"], "K64_floor_objective": now / before}


def main(argv=None):
    args = parse_args(argv)
    if not (EMODB / "wav").is_dir():
        print(f"EmoDB not found at {EMODB}; skipping")
        print_summary("kmeans", {"skipped": "no_emodb"})
        return 0
    start = time.perf_counter()
    print(f"machine: {machine_description()}", flush=True)
    features = emodb_features(args.cache_dir)
    runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.ks:
        runs = {k: v for k, v in runs.items() if k in args.ks}
    if args.full_recipe:
        runs = {k: (times, RECIPE["n_init"], RECIPE["init"]) for k, (times, _, _) in runs.items()}
    from fairseq_ser.clustering.faiss_import import import_faiss

    import_faiss()
    print(f"features: EmoDB, {len(features):,} frames of dim {features.shape[1]}; FAISS's BLAS kernels: "
          f"{blas_kernel()}; scikit-learn settings of the recipe: {RECIPE} (init and n_init per K below)", flush=True)
    try:
        summary = compare(features, runs, args.max_objective_ratio)
        if not args.no_tuning:
            summary.update(tuning(features, *(QUICK_TUNING if args.quick else DEFAULT_TUNING)))
    except CheckFailed as e:
        print(f"CHECK FAILED: {e}")
        return 1
    print(f"\n(wall time {time.perf_counter() - start:.0f} s)")
    print_summary("kmeans", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

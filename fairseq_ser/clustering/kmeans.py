"""FAISS k-means for several K, each on a bounded sample of the dumped frames.

Each K's sample is the only thing held in memory, one K at a time:
``min(max_frames, ceil(fraction * frames), max(max_points_per_centroid * K, min_frames))``
frames, taken at an even stride (random phase, from ``seed``) across all
shards of the k-means splits, read through memmaps. 256 frames per centroid
(FAISS's own limit) bound the large K; the floor of 65,536 frames gives the
small K more, which costs little time and lowers their objective (by 0.7 %
at K = 64 on EmoDB features: tests/benchmarks/bench_kmeans.py). FAISS
trains on the whole sample, on the GPU when it sees one (all of them), else
on the CPU.

Outputs per K, in ``LABEL_DIR``: ``km{K}.centroids.npy`` (``K x dim`` float32),
``dict.km{K}.txt`` (``id count`` lines, HuBERT's format; counts are the sampled
frames nearest each centroid), and ``km{K}.json`` (settings, objective per
iteration, source of the features), written last: a K whose json is there with
the same settings is not learned again.
"""

import hashlib
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.manifest import centroids_path, cluster_dict_path, kmeans_record_path
from ..errors import DataError, SerError
from ..fileio import atomic_open, atomic_path, read_json_or_none
from .dump import FeatureShard, load_shard
from .faiss_import import import_faiss

logger = logging.getLogger(__name__)

DEFAULT_KS = (64, 512, 4096)
DEFAULT_POINTS_PER_CENTROID = 256  # FAISS's own default max_points_per_centroid
DEFAULT_MIN_SAMPLE_FRAMES = 65536


def use_gpu(device: str) -> bool:
    """Resolve ``auto``/``cpu``/``cuda`` against the GPUs FAISS sees, and log the choice."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    faiss = import_faiss()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "cuda" and gpus == 0:
        raise SerError("--device cuda: FAISS sees no GPU (faiss-cpu installed, or no CUDA device)")
    gpu = device == "cuda" or (device == "auto" and gpus > 0)
    logger.info("FAISS runs on %s", f"{gpus} GPU(s)" if gpu else "the CPU" +
                (" (GPUs present but --device cpu)" if gpus else " (FAISS sees no GPU)"))
    return gpu


def load_shards(label_dir: str, splits: Sequence[str], nshard: int,
                source: Optional[Dict[str, Any]] = None) -> List[FeatureShard]:
    """Every shard of ``splits``; all complete and all produced by the same extractor."""
    shards = []
    for split in splits:
        for rank in range(nshard):
            shard = load_shard(label_dir, split, rank, nshard, source)
            source = source or shard.meta["source"]
            shards.append(shard)
    return shards


def sample_size(total: int, fraction: float, max_frames: int, k: Optional[int] = None,
                max_points_per_centroid: Optional[int] = None, min_frames: int = 0) -> int:
    """Frames sampled; for ``k``, at most ``max(max_points_per_centroid * k, min_frames)``."""
    if not 0 < fraction <= 1:
        raise DataError(f"--sample-fraction {fraction}: must be in (0, 1]")
    size = min(max_frames, math.ceil(fraction * total))
    if k is not None and max_points_per_centroid is not None:
        size = min(size, max(max_points_per_centroid * k, min_frames))
    return int(size)


def sample_index(total: int, size: int, seed: int) -> np.ndarray:
    """``min(size, total)`` ascending positions in ``[0, total)`` at an even stride, random phase from ``seed``."""
    size = min(size, total)
    if size == total:
        return np.arange(total, dtype=np.int64)
    stride = total / size
    phase = np.random.default_rng(seed).random() * stride
    return np.floor(phase + np.arange(size) * stride).astype(np.int64)


def sample_frames(shards: Sequence[FeatureShard], size: int, seed: int) -> np.ndarray:
    """``size`` frames at an even stride over the shards' frames (random phase); float32."""
    total = int(sum(s.meta["num_frames"] for s in shards))
    dim = int(shards[0].meta["source"]["dim"])
    index = sample_index(total, size, seed)
    out = np.empty((len(index), dim), dtype=np.float32)
    bounds = np.cumsum([0] + [s.meta["num_frames"] for s in shards])
    for shard, lo, hi in zip(shards, bounds[:-1], bounds[1:]):
        a, b = np.searchsorted(index, [lo, hi])
        shard.take(index[a:b] - lo, out=out[a:b])  # in place: no second copy of the sample
    return out


def train_kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 1, gpu: bool = False,
                 verbose: bool = False) -> Tuple[np.ndarray, List[float], np.ndarray]:
    """FAISS k-means of all the float32 rows ``x``: centroids, objective per iteration, rows per centroid.

    FAISS would subsample (into a copy) more than ``max_points_per_centroid * k``
    rows, so that limit is set to fit ``x``: choosing the rows is the caller's
    job. Its warning about too few rows per centroid is left to the caller's log.
    """
    faiss = import_faiss()
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, gpu=gpu, verbose=verbose,
                      max_points_per_centroid=-(-x.shape[0] // k), min_points_per_centroid=1)
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    _, ids = km.index.search(x, 1)
    return centroids, [float(o) for o in km.obj], np.bincount(ids[:, 0], minlength=k)


def sha1_of(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def read_kmeans_record(label_dir: str, k: int) -> Optional[Dict[str, Any]]:
    """K's ``km{K}.json``, or None if K was never learned or its learning was interrupted."""
    return read_json_or_none(kmeans_record_path(label_dir, k))


def learn_kmeans(label_dir: str, splits: Sequence[str], ks: Sequence[int], nshard: int = 1,
                 fraction: float = 1.0, max_frames: int = 1_000_000, niter: int = 20, seed: int = 1,
                 device: str = "auto", verbose: bool = False,
                 max_points_per_centroid: int = DEFAULT_POINTS_PER_CENTROID,
                 min_sample_frames: int = DEFAULT_MIN_SAMPLE_FRAMES) -> Dict[int, Dict[str, Any]]:
    """Learn (or find already learned) k-means for every K; returns each K's record."""
    if max_points_per_centroid < 1 or min_sample_frames < 0:
        raise DataError(f"--max-points-per-centroid {max_points_per_centroid}, --min-sample-frames "
                        f"{min_sample_frames}: must be at least 1 and 0")
    shards = load_shards(label_dir, splits, nshard)
    source = shards[0].meta["source"]
    total = int(sum(s.meta["num_frames"] for s in shards))
    sizes = {k: sample_size(total, fraction, max_frames, k, max_points_per_centroid, min_sample_frames) for k in ks}
    too_big = [k for k in ks if k > sizes[k]]
    if too_big:
        raise DataError(f"K={too_big[0]} is larger than the {sizes[too_big[0]]} frames sampled for k-means (of "
                        f"{total} frames in {', '.join(splits)}); lower K, or raise --sample-fraction/--max-sample-frames")
    records, todo = {}, []
    for k in ks:
        settings = {"k": k, "seed": seed, "niter": niter, "source": source,
                    "max_points_per_centroid": max_points_per_centroid,
                    "sample": {"splits": list(splits), "nshard": nshard, "fraction": fraction,
                               "max_frames": max_frames, "min_frames": min_sample_frames,
                               "num_frames": sizes[k], "total_frames": total,
                               "shards_sha1": sorted(s.meta["manifest_sha1"] for s in shards)}}
        old = read_kmeans_record(label_dir, k)
        if old is not None and _same(old, settings) and os.path.isfile(centroids_path(label_dir, k)):
            logger.info("km%d: already learned (%s), skipping", k, kmeans_record_path(label_dir, k))
            records[k] = old
        else:
            if old is not None:
                logger.warning("km%d: %s was learned with other settings or features; learning it again",
                               k, kmeans_record_path(label_dir, k))
            todo.append((k, settings))
    if not todo:
        return records
    gpu = use_gpu(device)
    for k, settings in todo:
        logger.info("km%d: sampling %d of %d frames (fraction %g, at most %d, at most %d per centroid or %d)",
                    k, sizes[k], total, fraction, max_frames, max_points_per_centroid, min_sample_frames)
        sample = sample_frames(shards, sizes[k], seed)
        records[k] = _learn_one(label_dir, sample, k, settings, gpu, verbose)
        del sample  # before the next K's sample is read
    return records


def _same(old: Dict[str, Any], settings: Dict[str, Any]) -> bool:
    return all(old.get(key) == value for key, value in settings.items())


def _learn_one(label_dir: str, sample: np.ndarray, k: int, settings: Dict[str, Any], gpu: bool,
               verbose: bool) -> Dict[str, Any]:
    if sample.shape[0] < 39 * k:
        logger.warning("km%d: only %d sampled frames, fewer than FAISS's recommended 39 per centroid",
                       k, sample.shape[0])
    logger.info("km%d: learning %d centroids on %d frames of dim %d, %d iterations",
                k, k, sample.shape[0], sample.shape[1], settings["niter"])
    centroids, objective, counts = train_kmeans(sample, k, settings["niter"], settings["seed"], gpu, verbose)
    for i, obj in enumerate(objective, start=1):
        logger.info("km%d: iteration %d/%d objective %.6g", k, i, settings["niter"], obj)
    if len(objective) < settings["niter"]:
        logger.info("km%d: FAISS stopped after %d iterations (converged)", k, len(objective))
    with atomic_path(centroids_path(label_dir, k)) as tmp:
        np.save(tmp, centroids)
    with atomic_open(cluster_dict_path(label_dir, k), "w", encoding="utf-8") as f:
        f.writelines(f"{i} {int(c)}\n" for i, c in enumerate(counts))
    record = {**settings, "objective": objective, "device": "gpu" if gpu else "cpu",
              "centroids_sha1": sha1_of(centroids), "empty_clusters": int((counts == 0).sum())}
    with atomic_open(kmeans_record_path(label_dir, k), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return record


def load_centroids(label_dir: str, k: int, source: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Centroids of a learned K, checked against its record (and against ``source`` if given)."""
    record = read_kmeans_record(label_dir, k)
    path = centroids_path(label_dir, k)
    if record is None or not os.path.isfile(path):
        raise DataError(f"{kmeans_record_path(label_dir, k)}: k-means for K={k} was not learned or was "
                        "interrupted; run `fairseq-ser pseudo-labels kmeans` first")
    centroids = np.load(path)
    if sha1_of(centroids) != record["centroids_sha1"]:
        raise DataError(f"{path}: does not match {kmeans_record_path(label_dir, k)}; learn K={k} again")
    if source is not None and record["source"] != source:
        raise DataError(f"{kmeans_record_path(label_dir, k)}: learned on features of another checkpoint "
                        f"or layer than the features being labelled")
    return centroids, record


def learned_ks(label_dir: str) -> List[int]:
    """Every K with a k-means record in ``label_dir``, ascending."""
    ks = []
    for name in os.listdir(label_dir) if os.path.isdir(label_dir) else []:
        if name.startswith("km") and name.endswith(".json") and name[2:-5].isdigit():
            ks.append(int(name[2:-5]))
    return sorted(ks)

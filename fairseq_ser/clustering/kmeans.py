"""FAISS k-means for several K at once, on a bounded sample of the dumped frames.

The sample is the only thing held in memory: ``min(max_frames, ceil(fraction *
frames))`` frames, taken at an even stride (random phase, from ``seed``) across
all shards of the k-means splits, read through memmaps. Every K is learned on
the same sample, on the GPU when FAISS sees one (all of them), else on the CPU.

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

from ..errors import DataError, SerError
from ..fileio import atomic_open, atomic_path
from .dump import FeatureShard, load_shard

logger = logging.getLogger(__name__)

DEFAULT_KS = (64, 512, 4096)


def centroids_path(label_dir: str, k: int) -> str:
    return os.path.join(label_dir, f"km{k}.centroids.npy")


def kmeans_record_path(label_dir: str, k: int) -> str:
    return os.path.join(label_dir, f"km{k}.json")


def label_dict_path(label_dir: str, k: int) -> str:
    return os.path.join(label_dir, f"dict.km{k}.txt")


def use_gpu(device: str) -> bool:
    """Resolve ``auto``/``cpu``/``gpu`` against the GPUs FAISS sees, and log the choice."""
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "gpu" and gpus == 0:
        raise SerError("--device gpu: FAISS sees no GPU (faiss-cpu installed, or no CUDA device)")
    gpu = device == "gpu" or (device == "auto" and gpus > 0)
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


def sample_size(total: int, fraction: float, max_frames: int) -> int:
    if not 0 < fraction <= 1:
        raise DataError(f"--sample-fraction {fraction}: must be in (0, 1]")
    return int(min(max_frames, math.ceil(fraction * total)))


def sample_frames(shards: Sequence[FeatureShard], size: int, seed: int) -> np.ndarray:
    """``size`` frames at an even stride over the shards' frames (random phase); float32."""
    total = int(sum(s.meta["num_frames"] for s in shards))
    dim = int(shards[0].meta["source"]["dim"])
    size = min(size, total)
    if size == total:
        index = np.arange(total, dtype=np.int64)
    else:
        stride = total / size
        phase = np.random.default_rng(seed).random() * stride
        index = np.floor(phase + np.arange(size) * stride).astype(np.int64)
    out = np.empty((size, dim), dtype=np.float32)
    bounds = np.cumsum([0] + [s.meta["num_frames"] for s in shards])
    for shard, lo, hi in zip(shards, bounds[:-1], bounds[1:]):
        a, b = np.searchsorted(index, [lo, hi])
        out[a:b] = shard.take(index[a:b] - lo)
    return out


def sha1_of(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def read_kmeans_record(label_dir: str, k: int) -> Optional[Dict[str, Any]]:
    path = kmeans_record_path(label_dir, k)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def learn_kmeans(label_dir: str, splits: Sequence[str], ks: Sequence[int], nshard: int = 1,
                 fraction: float = 1.0, max_frames: int = 1_000_000, niter: int = 20, seed: int = 1,
                 device: str = "auto", verbose: bool = False) -> Dict[int, Dict[str, Any]]:
    """Learn (or find already learned) k-means for every K; returns each K's record."""
    shards = load_shards(label_dir, splits, nshard)
    source = shards[0].meta["source"]
    total = int(sum(s.meta["num_frames"] for s in shards))
    size = sample_size(total, fraction, max_frames)
    settings = {"k": None, "seed": seed, "niter": niter, "source": source,
                "sample": {"splits": list(splits), "nshard": nshard, "fraction": fraction,
                           "max_frames": max_frames, "num_frames": size, "total_frames": total,
                           "shards_sha1": sorted(s.meta["manifest_sha1"] for s in shards)}}
    too_big = [k for k in ks if k > size]
    if too_big:
        raise DataError(f"K={too_big[0]} is larger than the {size} frames sampled for k-means (of {total} "
                        f"frames in {', '.join(splits)}); lower K, or raise --sample-fraction/--max-sample-frames")
    records, todo = {}, []
    for k in ks:
        old = read_kmeans_record(label_dir, k)
        if old is not None and _same(old, {**settings, "k": k}) and os.path.isfile(centroids_path(label_dir, k)):
            logger.info("km%d: already learned (%s), skipping", k, kmeans_record_path(label_dir, k))
            records[k] = old
        else:
            if old is not None:
                logger.warning("km%d: %s was learned with other settings or features; learning it again",
                               k, kmeans_record_path(label_dir, k))
            todo.append(k)
    if not todo:
        return records
    gpu = use_gpu(device)
    logger.info("sampling %d of %d frames (fraction %g, at most %d) for k-means", size, total, fraction, max_frames)
    sample = sample_frames(shards, size, seed)
    for k in todo:
        records[k] = _learn_one(label_dir, sample, k, {**settings, "k": k}, gpu, verbose)
    return records


def _same(old: Dict[str, Any], settings: Dict[str, Any]) -> bool:
    return all(old.get(key) == value for key, value in settings.items())


def _learn_one(label_dir: str, sample: np.ndarray, k: int, settings: Dict[str, Any], gpu: bool,
               verbose: bool) -> Dict[str, Any]:
    import faiss

    if sample.shape[0] < 39 * k:
        logger.warning("km%d: only %d sampled frames, fewer than FAISS's recommended 39 per centroid",
                       k, sample.shape[0])
    logger.info("km%d: learning %d centroids on %d frames of dim %d, %d iterations",
                k, k, sample.shape[0], sample.shape[1], settings["niter"])
    km = faiss.Kmeans(sample.shape[1], k, niter=settings["niter"], seed=settings["seed"], gpu=gpu,
                      verbose=verbose)
    km.train(sample)
    for i, obj in enumerate(km.obj, start=1):
        logger.info("km%d: iteration %d/%d objective %.6g", k, i, settings["niter"], obj)
    if len(km.obj) < settings["niter"]:
        logger.info("km%d: FAISS stopped after %d iterations (converged)", k, len(km.obj))
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    _, ids = km.index.search(sample, 1)
    counts = np.bincount(ids[:, 0], minlength=k)
    with atomic_path(centroids_path(label_dir, k)) as tmp:
        np.save(tmp, centroids)
    with atomic_open(label_dict_path(label_dir, k), "w", encoding="utf-8") as f:
        f.writelines(f"{i} {int(c)}\n" for i, c in enumerate(counts))
    record = {**settings, "objective": [float(o) for o in km.obj], "device": "gpu" if gpu else "cpu",
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

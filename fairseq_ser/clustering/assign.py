"""Assigning every frame its nearest centroid, and writing HuBERT-style label files.

Per feature shard, ``LABEL_DIR/parts/{split}_{rank}_{nshard}.km{K}`` holds one
line per utterance (space-separated cluster ids, one per frame) and
``.json`` (written last) what they were computed from. Once every shard of a
split is there, they are concatenated into ``LABEL_DIR/{split}.km{K}``, line-aligned
with ``{split}.tsv``, the format fairseq's ``hubert_pretraining`` task reads
(with ``dict.km{K}.txt`` and ``label_rate`` 50). Features are read in chunks
of about ``chunk_frames`` frames (whole utterances): 16384 frames of 512-d
features hold 48 MiB (float16 rows mapped, their float32 copy), and FAISS
labels them as fast as larger chunks (tests/benchmarks/bench_kmeans.py measures it).
"""

import json
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from ..data.frame_labels import check_frame_labels
from ..data.manifest import cluster_ext, cluster_label_path, manifest_path, read_manifest
from ..errors import DataError
from ..fileio import atomic_open, read_json_or_none
from .dump import load_shard, manifest_fingerprint, shard_range
from .faiss_import import import_faiss
from .kmeans import load_centroids

logger = logging.getLogger(__name__)

PARTS_SUBDIR = "parts"
DEFAULT_CHUNK_FRAMES = 16384
RECORD_NAME = "labels.json"


def part_prefix(label_dir: str, split: str, rank: int, nshard: int) -> str:
    return os.path.join(label_dir, PARTS_SUBDIR, f"{split}_{rank}_{nshard}")


def _part(prefix: str, k: int) -> str:
    """One shard's labels for ``k`` clusters: ``parts/{split}_{rank}_{nshard}.km{k}``."""
    return f"{prefix}.{cluster_ext(k)}"


def build_index(centroids: np.ndarray, gpu: bool = False):
    """A FAISS exact L2 index of the centroids (on every GPU FAISS sees with ``gpu``)."""
    faiss = import_faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    return faiss.index_cpu_to_all_gpus(index) if gpu else index


def assign_shard(label_dir: str, split: str, ks: Sequence[int], rank: int = 0, nshard: int = 1,
                 chunk_frames: int = DEFAULT_CHUNK_FRAMES, gpu: bool = False, progress: bool = True) -> bool:
    """Label one feature shard for every K; returns False if its labels were already there."""
    from tqdm import tqdm

    shard = load_shard(label_dir, split, rank, nshard)
    source = shard.meta["source"]
    cents = {k: load_centroids(label_dir, k, source) for k in ks}
    prefix = part_prefix(label_dir, split, rank, nshard)
    record = {"features_sha1": shard.meta["manifest_sha1"], "num_frames": shard.meta["num_frames"],
              "centroids_sha1": {str(k): cents[k][1]["centroids_sha1"] for k in ks}}
    if read_json_or_none(prefix + ".json") == record and all(os.path.isfile(_part(prefix, k)) for k in ks):
        logger.info("%s: already labelled, skipping", prefix)
        return False
    if os.path.isfile(prefix + ".json"):
        os.remove(prefix + ".json")
    indexes = {k: build_index(cents[k][0], gpu) for k in ks}
    lengths, offsets = shard.lengths, shard.offsets
    with _open_all([_part(prefix, k) for k in ks]) as outs:
        bar = tqdm(total=int(offsets[-1]), disable=not progress, unit="frame",
                   desc=f"labels {split} {rank}/{nshard}")
        u = 0
        while u < len(lengths):
            v = int(np.searchsorted(offsets, offsets[u] + chunk_frames, side="right")) - 1
            v = min(max(v, u + 1), len(lengths))  # at least one utterance per chunk
            x = shard.rows(offsets[u], offsets[v])
            for k, out in zip(ks, outs):
                _, ids = indexes[k].search(x, 1)
                for piece in np.split(ids[:, 0], np.cumsum(lengths[u:v])[:-1]):
                    out.write(" ".join(map(str, piece.tolist())) + "\n")
            bar.update(int(offsets[v] - offsets[u]))
            u = v
        bar.close()
    with atomic_open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return True


class _open_all:
    """Atomically written files, all renamed only if the whole block succeeds."""

    def __init__(self, paths):
        self.contexts = [atomic_open(p, "w", encoding="utf-8") for p in paths]

    def __enter__(self):
        self.files = []
        try:
            for c in self.contexts:
                self.files.append(c.__enter__())
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self.files

    def __exit__(self, exc_type, exc, tb):
        for c in self.contexts[:len(self.files)]:
            c.__exit__(exc_type, exc, tb)
        return False


def merge_split(label_dir: str, data_dir: str, split: str, ks: Sequence[int], nshard: int = 1) -> bool:
    """Concatenate the shards' labels into ``{split}.km{K}`` once all are there; False if some are missing.

    Checks the result against ``{split}.tsv`` as P-TAPT will read it
    (:func:`~fairseq_ser.data.frame_label_dataset.check_frame_labels`).
    """
    manifest = read_manifest(manifest_path(data_dir, split))
    prefixes = [part_prefix(label_dir, split, r, nshard) for r in range(nshard)]
    missing = [r for r, p in enumerate(prefixes) if read_json_or_none(p + ".json") is None]
    if missing:
        logger.info("%s: shards %s not labelled yet; not merging", split, missing)
        return False
    shards = [load_shard(label_dir, split, r, nshard) for r in range(nshard)]
    for r, shard in enumerate(shards):
        start, end = shard_range(len(manifest), r, nshard)
        if shard.meta["manifest_sha1"] != manifest_fingerprint(manifest, start, end):
            raise DataError(f"{shard.prefix}.json: features were dumped from another manifest than "
                            f"{manifest.path}; dump them again")
    num_samples = [n for _, n in manifest.entries]
    for k in ks:
        with atomic_open(cluster_label_path(label_dir, split, k), "w", encoding="utf-8") as out:
            for p in prefixes:
                with open(_part(p, k), encoding="utf-8") as f:
                    for line in f:
                        out.write(line)
        check_frame_labels(cluster_label_path(label_dir, split, k), num_samples, k, manifest.path)
    _update_record(label_dir, data_dir, split, ks, nshard, shards)
    logger.info("wrote %s", ", ".join(cluster_label_path(label_dir, split, k) for k in ks))
    return True


def _update_record(label_dir, data_dir, split, ks, nshard, shards):
    path = os.path.join(label_dir, RECORD_NAME)
    record = read_json_or_none(path) or {}
    source = shards[0].meta["source"]
    if record.get("source") != source or record.get("ks") != list(ks):
        record = {"source": source, "ks": list(ks), "splits": {}}
    _, km = load_centroids(label_dir, ks[0])
    record.update({"data": os.path.abspath(data_dir), "seed": km["seed"], "niter": km["niter"],
                   "kmeans_sample": km["sample"], "format": "hubert"})
    record["splits"][split] = {"utterances": int(sum(s.meta["num_utterances"] for s in shards)),
                               "frames": int(sum(s.meta["num_frames"] for s in shards)), "nshard": nshard}
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def assign_split(label_dir: str, data_dir: str, split: str, ks: Sequence[int], nshard: int = 1,
                 ranks: Optional[List[int]] = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES, gpu: bool = False,
                 progress: bool = True) -> bool:
    """Label the given shards (all by default), then merge the split if every shard is labelled."""
    for rank in (range(nshard) if ranks is None else ranks):
        assign_shard(label_dir, split, ks, rank, nshard, chunk_frames, gpu, progress)
    return merge_split(label_dir, data_dir, split, ks, nshard)

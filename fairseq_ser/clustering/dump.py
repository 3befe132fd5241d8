"""Dumping frame features of a manifest split to disk, one shard at a time.

Shard ``rank`` of ``nshard`` of a split holds a contiguous range of manifest
lines, in three files under ``LABEL_DIR/features/``:

- ``{split}_{rank}_{nshard}.npy``: all frames of its utterances, ``(frames, dim)``,
  float16 or float32, written one utterance at a time and read back in
  blocks through short-lived memmaps of those rows only (never held whole);
- ``{split}_{rank}_{nshard}.len``: frames per utterance, one per line;
- ``{split}_{rank}_{nshard}.json``: what produced them (checkpoint path, size,
  mtime, layer, extractor, dim), which manifest lines, how many frames. Written
  last: a shard without it is incomplete and is dumped again.

Frame alignment: every utterance gets exactly ``extractor.num_frames(num_samples)``
frames, the frame count of the wav2vec 2.0 the labels are for. An extractor
that gives one frame more has its last frame dropped; one frame fewer has its
last frame repeated (so the last label repeats); any other difference is an
error naming the utterance.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ..data.audio import read_audio
from ..data.manifest import Manifest, manifest_path, read_manifest
from ..errors import DataError
from ..fileio import atomic_open, read_json_or_none
from ..frames import RECEPTIVE_FIELD

logger = logging.getLogger(__name__)

FEATURES_SUBDIR = "features"
FEATURE_DTYPES = ("float16", "float32")


def shard_range(total: int, rank: int, nshard: int):
    """Manifest lines ``[start, end)`` of shard ``rank``: contiguous, sizes differing by at most one."""
    if nshard < 1 or not 0 <= rank < nshard:
        raise DataError(f"--rank {rank} is not in [0, --nshard {nshard})")
    return total * rank // nshard, total * (rank + 1) // nshard


def shard_prefix(label_dir: str, split: str, rank: int, nshard: int) -> str:
    return os.path.join(label_dir, FEATURES_SUBDIR, f"{split}_{rank}_{nshard}")


def manifest_fingerprint(manifest: Manifest, start: int = 0, end: Optional[int] = None) -> str:
    """sha1 of the root and the ``relpath<TAB>num_samples`` lines ``[start, end)``."""
    h = hashlib.sha1(manifest.root.encode("utf-8"))
    for relpath, n in manifest.entries[start:end]:
        h.update(f"\n{relpath}\t{n}".encode("utf-8"))
    return h.hexdigest()


def align_frames(features: np.ndarray, expected: int, where: str) -> np.ndarray:
    """Trim or pad ``features`` to ``expected`` frames by the one-frame rule of this module."""
    got = features.shape[0]
    if got == expected:
        return features
    if got == expected + 1:
        return features[:expected]
    if got == expected - 1 and got > 0:
        return np.concatenate([features, features[-1:]], axis=0)
    raise DataError(f"{where}: the feature extractor gave {got} frames, but the wav2vec 2.0 frame rule "
                    f"gives {expected} for its num_samples; is the manifest's num_samples the audio's length?")


def expected_frames(extractor, manifest: Manifest, start: int, end: int) -> List[int]:
    counts = []
    for i in range(start, end):
        n = manifest.entries[i][1]
        t = int(extractor.num_frames(n))
        if t < 1:
            raise DataError(f"{manifest.path}:{i + 2}: {manifest.entries[i][0]} has {n} samples, "
                            f"too short for a single wav2vec 2.0 frame (at least {RECEPTIVE_FIELD} samples)")
        counts.append(t)
    return counts


@dataclass
class FeatureShard:
    """A complete dumped shard: its memmapped features and frames per utterance."""

    prefix: str
    meta: Dict[str, Any]
    lengths: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def _layout(self):
        """dtype, dim and data offset of the shard's .npy, checked against its json."""
        path = self.prefix + ".npy"
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            offset = f.tell()
        if shape != (self.meta["num_frames"], self.meta["source"]["dim"]):
            raise DataError(f"{path}: shape {shape} does not match {self.prefix}.json; the shard is "
                            "corrupt, delete it")
        return dtype, shape[1], offset

    def _map(self, start: int, end: int) -> np.ndarray:
        # a map of these rows only: the pages it touches leave resident memory when it goes
        dtype, dim, offset = self._layout()
        return np.memmap(self.prefix + ".npy", dtype=dtype, mode="r",
                         offset=offset + start * dim * dtype.itemsize, shape=(end - start, dim))

    def rows(self, start: int, end: int) -> np.ndarray:
        """Frames ``[start, end)`` as float32, in memory."""
        if end <= start:
            return np.zeros((0, self.meta["source"]["dim"]), dtype=np.float32)
        return np.array(self._map(start, end), dtype=np.float32)

    def take(self, index: np.ndarray, block_bytes: int = 8 << 20, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Frames at the ascending positions ``index`` as float32, mapped about ``block_bytes`` at a time.

        With ``out`` (``len(index) x dim`` float32), they are written there rather than
        into a new array, so that a caller filling a larger array holds no second copy.
        """
        dtype, dim, _ = self._layout()
        block_rows = max(1, block_bytes // (dim * dtype.itemsize))
        if out is None:
            out = np.empty((len(index), dim), dtype=np.float32)
        elif out.shape != (len(index), dim) or out.dtype != np.float32:
            raise ValueError(f"out has shape {out.shape} and dtype {out.dtype}, expected ({len(index)}, {dim}) float32")
        pos = 0
        while pos < len(index):
            lo = int(index[pos])
            end = int(np.searchsorted(index, lo + block_rows))
            block = self._map(lo, int(index[end - 1]) + 1)
            out[pos:end] = block[index[pos:end] - lo]
            del block
            pos = end
        return out


def read_shard_meta(prefix: str) -> Optional[Dict[str, Any]]:
    """The shard's json, or None if the shard is absent or was interrupted before it was complete."""
    return read_json_or_none(prefix + ".json")


def check_same_source(meta: Dict[str, Any], source: Dict[str, Any], where: str) -> None:
    if meta.get("source") != source:
        raise DataError(
            f"{where}: these features were produced by {_brief(meta.get('source'))}, not by "
            f"{_brief(source)}; use another LABEL_DIR, or delete {os.path.dirname(where)} to start over")


def _brief(source: Optional[Dict[str, Any]]) -> str:
    if not source:
        return "an unknown extractor"
    return (f"{source.get('extractor')} of {source.get('checkpoint')} (layer {source.get('layer')}, "
            f"dim {source.get('dim')}, size {source.get('checkpoint_size')}, "
            f"mtime {source.get('checkpoint_mtime')})")


def load_shard(label_dir: str, split: str, rank: int, nshard: int,
               source: Optional[Dict[str, Any]] = None) -> FeatureShard:
    """Open a complete shard; an absent or interrupted one is an error naming it."""
    prefix = shard_prefix(label_dir, split, rank, nshard)
    meta = read_shard_meta(prefix)
    if meta is None:
        raise DataError(f"{prefix}.json: features of {split!r} shard {rank} of {nshard} are missing or "
                        "incomplete (interrupted?); run `fairseq-ser pseudo-labels dump` for it")
    if source is not None:
        check_same_source(meta, source, prefix + ".json")
    lengths = np.loadtxt(prefix + ".len", dtype=np.int64, ndmin=1) if meta["num_utterances"] else np.zeros(0, np.int64)
    if len(lengths) != meta["num_utterances"] or int(lengths.sum()) != meta["num_frames"]:
        raise DataError(f"{prefix}.len: does not match {prefix}.json; the shard is corrupt, delete it")
    return FeatureShard(prefix, meta, lengths)


def dump_shard(extractor, data_dir: str, split: str, label_dir: str, rank: int = 0, nshard: int = 1,
               dtype: str = "float16", source: Optional[Dict[str, Any]] = None, progress: bool = True) -> bool:
    """Dump one shard's features; returns False if a complete shard from the same source was there."""
    from .features import source_description

    if dtype not in FEATURE_DTYPES:
        raise DataError(f"--dtype {dtype!r}: expected one of {', '.join(FEATURE_DTYPES)}")
    source = source or source_description(extractor)
    manifest = read_manifest(manifest_path(data_dir, split))
    start, end = shard_range(len(manifest), rank, nshard)
    prefix = shard_prefix(label_dir, split, rank, nshard)
    fingerprint = manifest_fingerprint(manifest, start, end)
    old = read_shard_meta(prefix)
    if old is not None:
        check_same_source(old, source, prefix + ".json")
        if old.get("manifest_sha1") != fingerprint:
            raise DataError(f"{prefix}.json: was dumped from another version of {manifest.path} "
                            "(its lines differ); use another LABEL_DIR or delete the features folder")
        if old.get("dtype") == dtype:
            logger.info("%s: already dumped, skipping", prefix)
            return False
        os.remove(prefix + ".json")  # about to be rewritten in another dtype: incomplete until then
    counts = expected_frames(extractor, manifest, start, end)
    total, dim = int(sum(counts)), int(extractor.dim)
    logger.info("dumping %s shard %d/%d: %d utterances, %d frames of dim %d (%s) to %s.npy",
                split, rank, nshard, end - start, total, dim, dtype, prefix)
    with atomic_open(prefix + ".npy", "wb") as f:
        # a plain .npy written front to back: the process never maps (and so never holds) the shard
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": (total, dim)})
        for feats in _features(extractor, manifest, start, end, counts, dim, dtype, progress,
                               f"{split} {rank}/{nshard}"):
            f.write(feats.tobytes())
    with atomic_open(prefix + ".len", "w", encoding="utf-8") as f:
        f.writelines(f"{t}\n" for t in counts)
    meta = {"source": source, "split": split, "rank": rank, "nshard": nshard,
            "manifest": os.path.abspath(manifest.path), "manifest_sha1": fingerprint,
            "lines": [start, end], "num_utterances": end - start, "num_frames": total, "dtype": dtype}
    with atomic_open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return True


def _features(extractor, manifest, start, end, counts, dim, dtype, progress, name):
    """Each utterance's features as ``dtype``, aligned to its wav2vec 2.0 frame count."""
    from tqdm import tqdm

    for i, t in tqdm(zip(range(start, end), counts), total=end - start, disable=not progress,
                     desc=f"features {name}", unit="utt"):
        where = f"{manifest.path}:{i + 2} ({manifest.entries[i][0]})"
        feats = extractor.extract(read_audio(manifest.audio_path(i)))
        if feats.ndim != 2 or feats.shape[1] != dim:
            raise DataError(f"{where}: extractor returned shape {feats.shape}, expected (frames, {dim})")
        feats = align_frames(feats, t, where).astype(dtype)
        if not np.isfinite(feats).all():
            raise DataError(f"{where}: features overflow or are not finite as {dtype}"
                            + ("; use --dtype float32" if dtype == "float16" else ""))
        yield feats


def check_folder_source(label_dir: str, source: Dict[str, Any]) -> None:
    """Refuse a features folder holding any shard of another checkpoint, layer or extractor."""
    folder = os.path.join(label_dir, FEATURES_SUBDIR)
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json") and not name.startswith("."):
            meta = read_shard_meta(os.path.join(folder, name[:-5]))
            check_same_source(meta, source, os.path.join(folder, name))


def dump_split(extractor, data_dir: str, split: str, label_dir: str, nshard: int = 1,
               ranks: Optional[List[int]] = None, dtype: str = "float16", progress: bool = True) -> None:
    from .features import source_description

    source = source_description(extractor)
    check_folder_source(label_dir, source)
    for rank in (range(nshard) if ranks is None else ranks):
        dump_shard(extractor, data_dir, split, label_dir, rank, nshard, dtype, source, progress)

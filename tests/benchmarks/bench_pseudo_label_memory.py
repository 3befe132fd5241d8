"""Benchmark 2: peak resident memory of the whole pseudo-label command on EmoDB repeated 1x, 4x and 16x.

Each scale runs the README's command as its own process,

    fairseq-ser pseudo-labels run DATA LABELS --checkpoint CKPT --ks 64 512 --no-progress

and ``common.run_measured`` reads that process's peak RSS from ``wait4``.
DATA's ``train.tsv`` lists every EmoDB wav ``scale`` times (the same files: no
audio is copied). CKPT is a P-TAPT stage-1 frame emotion model with random
weights whose wav2vec 2.0 backbone is tiny (CNN of 32 channels, one
Transformer layer of 64) but whose frame features are as wide as the real ones
(512-d): memory scales with the feature width, not with the model, while
feature extraction, nearly all of the time, stays cheap enough for 16x. The
command runs on one thread (``--threads``): on 2 cores shared with other work
the tiny model's many small operations ran at 55 times real time on one
thread and 3 times on two.
K = 64 and 512 keep the assignment of 16x's 1.2 M frames to seconds; a larger
K only changes the size of the sample.

What should stay flat: features stream to disk utterance by utterance,
k-means holds one K's sample (256 frames per centroid of the largest K, at
least 65,536, at most ``--max-sample-frames``), assignment one chunk of frames.
The table shows that sample beside the peak, and the sample the old rule (all
frames up to 1M) would have held. The reference implementation's design (a
max(K) x 1000 x dim float32 buffer preallocated, plus all features in RAM) is
given as computed figures for the same sizes; it was not run. A second table
runs the assign step alone at the largest scale with the old and the new chunk.

Every run is checked before its numbers are printed: one label line per
manifest line, one id per wav2vec 2.0 frame, and the repeats of an utterance
labelled alike.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (EMODB, REPO, emodb_manifest, frame_model_checkpoint, machine_description,  # noqa: E402
                    print_summary, print_table, run_measured)

sys.path.insert(0, str(REPO))

TINY_MODEL = dict(channels=32, layers=1, embed=64, frame_dim=512)
MIB = 2**20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="scales 1 and 4 only (about two minutes on 2 cores)")
    p.add_argument("--scales", type=int, nargs="+", help="how many times EmoDB is repeated, one run each "
                   "(default: 1 4 16; with --quick: 1 4)")
    p.add_argument("--ks", type=int, nargs="+", default=[64, 512], help="--ks of the command (default: %(default)s)")
    p.add_argument("--max-sample-frames", type=int,
                   help="--max-sample-frames of the command (default: the command's own)")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of the command (default: %(default)s: peak memory does not depend on it, "
                   "and the tiny model's many small operations run fastest on one thread of a shared machine)")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fairseq-ser-bench",
                   help="where the checkpoint is kept and the runs write, each in a folder of its own that "
                   "is deleted after it (default: %(default)s)")
    return p.parse_args(argv)


def command_path():
    exe = Path(sys.executable).parent / "fairseq-ser"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: install the package first (make install)")
    return exe


def check_labels(data: Path, labels: Path, ks, times: int, per_copy: int):
    """Label files match the manifest frame by frame; every repeat of an utterance is labelled like the first."""
    from fairseq_ser.data.frame_labels import check_frame_labels
    from fairseq_ser.data.manifest import cluster_label_path, read_manifest

    manifest = read_manifest(str(data / "train.tsv"))
    for k in ks:
        path = cluster_label_path(str(labels), "train", k)
        check_frame_labels(path, [n for _, n in manifest.entries], k, manifest.path)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        first = lines[:per_copy]
        same = total = 0
        for copy in range(1, times):
            for a, b in zip(first, lines[copy * per_copy:(copy + 1) * per_copy]):
                ids_a, ids_b = a.split(), b.split()
                same += sum(x == y for x, y in zip(ids_a, ids_b))
                total += len(ids_a)
        if total and same / total < 0.999:
            raise RuntimeError(f"{path}: repeats of the same audio agree on only {same / total:.2%} of their ids")


def sample_frames_logged(output: str, k: int) -> int:
    found = re.findall(rf"km{k}: sampling (\d+) of (\d+) frames", output)
    if not found:
        raise RuntimeError(f"the command did not log the sample of km{k}:\n{output[-3000:]}")
    return int(found[-1][0])


def assign_step(exe, data, labels, ks, chunk, env):
    """Peak RSS and seconds of the assign step alone (its earlier labels removed first)."""
    shutil.rmtree(labels / "parts", ignore_errors=True)
    for k in ks:
        (labels / f"train.km{k}").unlink(missing_ok=True)
    argv = [exe, "pseudo-labels", "assign", data, labels, "--ks", *ks, "--chunk-frames", chunk, "--no-progress"]
    seconds, peak, _ = run_measured(argv, env=env, cwd=REPO)
    return peak, seconds


def run_scale(exe, ckpt, args, env, times, work, assign_alone):
    """Run the command on EmoDB ``times`` over in ``work``, check its labels; (table row, peak, reference, rows)."""
    from fairseq_ser.clustering.assign import DEFAULT_CHUNK_FRAMES
    from fairseq_ser.clustering.dump import load_shard
    from fairseq_ser.data.manifest import read_manifest

    dim, kmax = TINY_MODEL["frame_dim"], max(args.ks)
    data, labels = emodb_manifest(work / "data", times), work / "labels"
    argv = [exe, "pseudo-labels", "run", data, labels, "--checkpoint", ckpt, "--ks", *args.ks, "--no-progress"]
    if args.max_sample_frames:
        argv += ["--max-sample-frames", args.max_sample_frames]
    print(f"{times}x EmoDB: {' '.join(map(str, argv[1:]))}", flush=True)
    seconds, peak, output = run_measured(argv, env=env, cwd=REPO)
    utterances = len(read_manifest(str(data / "train.tsv")))
    check_labels(data, labels, args.ks, times, utterances // times)
    frames = int(load_shard(str(labels), "train", 0, 1).meta["num_frames"])
    disk = (labels / "features" / "train_0_1.npy").stat().st_size
    sample = max(sample_frames_logged(output, k) for k in args.ks)
    sample_bytes = sample * dim * 4
    old_sample_bytes = min(frames, args.max_sample_frames or 1_000_000) * dim * 4
    reference = kmax * 1000 * dim * 4 + frames * dim * 4
    print(f"  {frames:,} frames, peak RSS {peak / MIB:,.0f} MiB, {seconds:.0f} s", flush=True)
    row = [f"{times}x", f"{utterances:,}", f"{frames:,}", f"{disk / MIB:,.0f}", f"{sample:,} / {sample_bytes / MIB:,.0f}",
           f"**{peak / MIB:,.0f}**", f"{(peak - sample_bytes) / MIB:,.0f}", f"{seconds:.0f}",
           f"{old_sample_bytes / MIB:,.0f}", f"{reference / MIB:,.0f}", f"{reference / peak:.1f}x"]
    chunk_rows = []
    if assign_alone:  # the assign step alone: the old chunk of 100,000 frames against ours
        for chunk, label in ((100_000, "100,000 (before)"), (DEFAULT_CHUNK_FRAMES, f"{DEFAULT_CHUNK_FRAMES:,} (now)")):
            chunk_peak, chunk_seconds = assign_step(exe, data, labels, args.ks, chunk, env)
            check_labels(data, labels, args.ks, times, utterances // times)
            chunk_rows.append([f"{times}x", label, f"{chunk_peak / MIB:,.0f}", f"{chunk_seconds:.0f}"])
    return row, peak, reference, chunk_rows


def main(argv=None):
    args = parse_args(argv)
    if not (EMODB / "wav").is_dir():
        print(f"EmoDB not found at {EMODB}; skipping")
        print_summary("pseudo_label_memory", {"skipped": "no_emodb"})
        return 0
    scales = args.scales or ([1, 4] if args.quick else [1, 4, 16])
    exe = command_path()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    print(f"machine: {machine_description()}; the command runs with OMP_NUM_THREADS={args.threads}", flush=True)
    ckpt = frame_model_checkpoint(args.cache_dir / "frame_model_tiny.pt", **TINY_MODEL)
    dim, kmax = TINY_MODEL["frame_dim"], max(args.ks)
    rows, peaks, refs, chunk_rows = [], {}, {}, []
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    for times in scales:
        work = Path(tempfile.mkdtemp(prefix=f"memory-{times}x-", dir=args.cache_dir))  # runs may overlap
        try:
            row, peaks[times], refs[times], more = run_scale(exe, ckpt, args, env, times, work, times == max(scales))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append(row)
        chunk_rows += more
    print_table(f"Peak RSS of `fairseq-ser pseudo-labels run` (--ks {' '.join(map(str, args.ks))}, "
                f"{dim}-d features), MiB",
                ["EmoDB", "utterances", "frames", "features on disk", "k-means sample (frames / MiB)",
                 "peak RSS", "peak RSS - sample", "wall s", "sample under the old rule (all frames up to 1M)",
                 f"reference design: {kmax} x 1000 x {dim} + all features (computed)", "reference / ours"], rows)
    print_table("The assign step alone (`pseudo-labels assign`), by --chunk-frames",
                ["EmoDB", "--chunk-frames", "peak RSS MiB", "wall s"], chunk_rows)
    print(f"\n(wall time {time.perf_counter() - start:.0f} s)")
    lo, hi = min(scales), max(scales)
    summary = {f"rss_{hi}x_over_{lo}x": peaks[hi] / peaks[lo], f"reference_over_ours_{hi}x": refs[hi] / peaks[hi]}
    print_summary("pseudo_label_memory", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU: V-FT and P-TAPT updates of a wav2vec2-base-shaped model, and FAISS k-means K=4096 on 1M x 768.

On a CUDA machine with the project installed (plus faiss-gpu for the k-means
row), times:

- V-FT updates of a ``ser_wav2vec2_classifier`` of wav2vec2-base's shape
  (random weights) with the project's criterion and Adam, under bf16 autocast
  and under fp16 autocast with a gradient scaler: utterances per second;
- P-TAPT updates of a ``ser_wav2vec2_ptapt`` of the same shape with three
  heads (K = 64, 512, 4096) on random frame labels, bf16;
- FAISS k-means with K = 4096 on 1M x 768 float32 features (points around
  random centres), 20 iterations as ``fairseq-ser pseudo-labels`` runs it,
  on the GPU when FAISS sees one; with faiss-cpu it says so and times the CPU
  on a 64k-point sample instead.

The updates use the batches V-FT trains on: utterances of an IEMOCAP-like
length distribution (see bench_batching.py), cropped to 10 s and grouped by
the project's ``min_padding`` batching of 64 utterances per update on
average; ``--updates`` batches at evenly spaced quantiles of their padded
size are timed after ``--warmup`` untimed ones. Without a GPU it prints that
it found none and exits; ``--device cpu`` runs the same code on the CPU with
a small model and tiny sizes, to check the code path.
"""

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from common import machine_description, print_summary, print_table  # noqa: E402

SAMPLE_RATE = 16000
CROP = 160000  # config/vft.yaml and config/ptapt.yaml: task.max_sample_size


def make_batches(count, batch_size, seed, max_seconds=None):
    """Batches of random audio lengths (samples) as V-FT builds them: IEMOCAP-like, cropped, min_padding."""
    from bench_batching import iemocap_like_lengths

    from fairseq_ser.data.batching import min_padding_batches

    seconds = iemocap_like_lengths(count, seed)
    if max_seconds is not None:
        seconds = np.minimum(seconds, max_seconds)
    lengths = np.minimum(np.round(seconds * SAMPLE_RATE).astype(np.int64), CROP)
    return [lengths[b] for b in min_padding_batches(np.arange(count), lengths, batch_size)]


def pick(batches, count):
    from bench_batching import quantile_picks

    padded = np.array([len(b) * b.max() for b in batches], dtype=np.float64)
    return [batches[i] for i in quantile_picks(padded, count)]


def audio_batch(lengths, device, gen):
    """``(source, padding_mask)`` of random audio with these lengths, zero-padded to the longest."""
    import torch

    longest = int(lengths.max())
    source = torch.randn(len(lengths), longest, device=device, generator=gen) * 0.1
    padding = torch.arange(longest, device=device)[None, :] >= torch.as_tensor(lengths, device=device)[:, None]
    return source.masked_fill(padding, 0.0), padding


class Timer:
    """Wall seconds of a block, synchronising the GPU around it."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def _sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def time_updates(model, criterion, make_sample, batches, precision, device, warmup):
    """Mean seconds per update and utterances per second over ``batches`` (after ``warmup`` untimed ones)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model.train()

    def update(lengths, step):
        torch.manual_seed(step)
        sample = make_sample(lengths)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=dtype):
            loss, sample_size, _ = criterion(model, sample)
        scaler.scale(loss / sample_size).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    for step in range(warmup):
        loss = update(batches[step % len(batches)], step)
        if not torch.isfinite(loss):
            raise AssertionError(f"warm-up update {step}: loss {loss.item()}")
    seconds = []
    for step, lengths in enumerate(batches):
        with Timer(device) as t:
            update(lengths, warmup + step)
        seconds.append(t.seconds)
    utterances = sum(len(b) for b in batches)
    audio = sum(float(b.sum()) for b in batches) / SAMPLE_RATE
    return float(np.mean(seconds)), utterances / sum(seconds), audio / sum(seconds)


def vft_rows(shape, batches, precisions, device, warmup):
    import torch

    from bench_batching import random_classifier
    from fairseq_ser.criterions.ser_cross_entropy import SerCrossEntropyCriterion

    classes = ["neu", "hap", "ang", "sad"]
    criterion = SerCrossEntropyCriterion(SimpleNamespace(class_names=classes, class_weights=None)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def make_sample(lengths):
        source, padding = audio_batch(lengths, device, gen)
        target = torch.randint(0, len(classes), (len(lengths),), device=device, generator=gen)
        return {"net_input": {"source": source, "padding_mask": padding}, "target": target}

    rows = []
    for precision in precisions:
        model = random_classifier(classes, shape).to(device)
        # the untimed forward checks the output before anything is timed
        with torch.no_grad():
            logits = model(**make_sample(batches[0])["net_input"])
        if tuple(logits.shape) != (len(batches[0]), len(classes)) or not torch.isfinite(logits.float()).all():
            raise AssertionError(f"V-FT logits {tuple(logits.shape)} for a batch of {len(batches[0])}")
        reset_peak(device)
        per_update, utt_s, audio_s = time_updates(model, criterion, make_sample, batches, precision, device, warmup)
        rows.append((f"V-FT update, {precision}" + (" + GradScaler" if precision == "fp16" else ""),
                     per_update, utt_s, audio_s, peak_memory(device)))
        del model
    return rows


def ptapt_row(shape, batches, device, warmup, precision, cluster_sizes=(64, 512, 4096)):
    import torch
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    from bench_batching import backbone_args
    from fairseq_ser.criterions.ser_ptapt_cross_entropy import SerPtaptCrossEntropyCriterion
    from fairseq_ser.data.frame_label_dataset import LABEL_PAD, cnn_frames
    from fairseq_ser.models.ser_wav2vec2_ptapt import SerWav2Vec2Ptapt, SerWav2Vec2PtaptConfig

    torch.manual_seed(0)
    cfg = merge_with_parent(SerWav2Vec2PtaptConfig(), OmegaConf.create(
        {"w2v_path": "(random weights)", "w2v_args": backbone_args(shape)}))
    model = SerWav2Vec2Ptapt.build_model(cfg, SimpleNamespace(cluster_sizes=list(cluster_sizes))).to(device)
    criterion = SerPtaptCrossEntropyCriterion(SimpleNamespace())
    gen = torch.Generator(device=device).manual_seed(0)

    def make_sample(lengths):
        source, padding = audio_batch(lengths, device, gen)
        frames = cnn_frames(int(lengths.max()))
        targets = []
        for k in cluster_sizes:
            labels = torch.randint(0, k, (len(lengths), frames), device=device, generator=gen)
            valid = torch.arange(frames, device=device)[None, :] < torch.as_tensor(
                [cnn_frames(int(n)) for n in lengths], device=device)[:, None]
            targets.append(labels.masked_fill(~valid, LABEL_PAD))
        return {"net_input": {"source": source, "padding_mask": padding}, "target_list": targets,
                "nsentences": len(lengths)}

    reset_peak(device)
    per_update, utt_s, audio_s = time_updates(model, criterion, make_sample, batches, precision, device, warmup)
    return (f"P-TAPT update (K = {', '.join(map(str, cluster_sizes))}), {precision}", per_update, utt_s, audio_s,
            peak_memory(device))


def kmeans_row(points, dim, k, niter, device):
    """FAISS k-means as the project runs it (faiss.Kmeans, niter, seed 1), on the GPU when FAISS sees one."""
    import faiss
    import torch

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    use_gpu = device.type == "cuda" and gpus > 0
    note = ""
    if device.type == "cuda" and not use_gpu:
        note = "faiss has no GPU support here (faiss-cpu): timed on the CPU with a 64k-point sample"
        points = min(points, 65536)
    # points around k random centres (float32, generated on the device, then on the host as FAISS wants)
    gen = torch.Generator(device=device).manual_seed(0)
    centres = torch.randn(k, dim, device=device, generator=gen)
    owner = torch.randint(0, k, (points,), device=device, generator=gen)
    x = (centres[owner] + 0.5 * torch.randn(points, dim, device=device, generator=gen)).float().cpu().numpy()
    del centres, owner
    km = faiss.Kmeans(dim, k, niter=niter, seed=1, gpu=use_gpu, verbose=False)
    start = time.perf_counter()
    km.train(x)
    assigned = min(points, 100_000)
    _, ids = km.index.search(x[:assigned], 1)
    seconds = time.perf_counter() - start
    if km.centroids.shape != (k, dim) or not np.isfinite(km.centroids).all() or ids.max() >= k:
        raise AssertionError(f"k-means returned centroids {km.centroids.shape}")
    where = f"{gpus} GPU(s)" if use_gpu else "CPU"
    label = f"FAISS k-means K={k} on {points:,} x {dim}, {niter} iterations + assigning {assigned:,}, {where}"
    return label, seconds, note


def reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device):
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
    return "-"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto: the GPU if there is one, else print that there is none and stop; "
                        "cpu: run the same code on the CPU with a small model and tiny sizes (a check of "
                        "the code path, not a measurement) (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 timed updates, K-means on 200k points")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="utterances per update on average, as dataset.batch_size (default: %(default)s)")
    parser.add_argument("--updates", type=int, default=10, help="timed updates per row (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first (default: %(default)s)")
    parser.add_argument("--points", type=int, default=1_000_000, help="k-means points (default: %(default)s)")
    parser.add_argument("--clusters", type=int, default=4096, help="k-means K (default: %(default)s)")
    parser.add_argument("--niter", type=int, default=20,
                        help="k-means iterations, as fairseq-ser pseudo-labels (default: %(default)s)")
    args = parser.parse_args(argv)
    import logging
    import warnings

    import torch

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
    print(f"machine: {machine_description()}", flush=True)
    if args.device == "auto":
        if not torch.cuda.is_available():
            print("no CUDA GPU found; nothing to time (--device cpu runs the code path on the CPU)")
            print_summary("gpu", {"skipped": "no-cuda"})
            return 0
        args.device = "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA GPU found")
        return 1
    device = torch.device(args.device)
    if args.quick:
        args.updates, args.points = min(args.updates, 3), min(args.points, 200_000)
    start = time.perf_counter()
    if device.type == "cuda":
        shape, dim = None, 768  # fairseq's Wav2Vec2Config defaults: wav2vec2-base
        print(f"model: wav2vec2-base shape (fairseq's Wav2Vec2Config defaults: 12 layers of 768); "
              f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
              flush=True)
        batches = pick(make_batches(5531, args.batch_size, seed=1), args.updates)
        points, clusters, niter = args.points, args.clusters, args.niter
        precisions = ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    else:
        from bench_batching import SMALL_SHAPE

        shape, dim = SMALL_SHAPE, 64
        print("--device cpu: the code path on the CPU, small model, one timed update of 4 utterances of at most 2 s, "
              "k-means K=64 on 20k x 64; not a measurement", flush=True)
        args.warmup = min(args.warmup, 1)
        batches = pick(make_batches(64, 4, seed=1, max_seconds=2.0), 1)
        points, clusters, niter = 20_000, 64, 5
        precisions = ["bf16", "fp16"]
    rows = []
    ptapt_precision = precisions[0]
    for label, per_update, utt_s, audio_s, memory in (
            vft_rows(shape, batches, precisions, device, args.warmup)
            + [ptapt_row(shape, batches, device, args.warmup, ptapt_precision)]):
        rows.append([label, f"{np.mean([len(b) for b in batches]):.1f}", f"{per_update:.3f}", f"{utt_s:.1f}",
                     f"{audio_s:.0f}", memory])
    km_label, km_seconds, note = kmeans_row(points, dim, clusters, niter, device)
    rows.append([km_label, "-", f"{km_seconds:.1f}", "-", "-", "-"])
    print_table(f"GPU timings ({'CUDA' if device.type == 'cuda' else 'CPU code-path check'})",
                ["what", "utterances / update", "s / update (k-means: s)", "utterances / s",
                 "audio s / s", "peak GPU memory"], rows)
    if note:
        print(note)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    summary = {"device": device.type}
    summary.update({f"vft_{p}_utt_per_s": float(r[3]) for p, r in zip(precisions, rows)})
    summary[f"ptapt_{ptapt_precision}_utt_per_s"] = float(rows[len(precisions)][3])
    summary["kmeans_s"] = km_seconds
    print_summary("gpu", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

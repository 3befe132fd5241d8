"""GPU: every stage as users run it (fp16 and bf16), hand-written update loops, FAISS k-means; one table.

On a CUDA machine with the project installed (FAISS with GPU support for the
GPU k-means; tests/benchmarks/gpu_run.sh installs what tests/benchmarks/
gpu_bundle.py gathered on a machine without fairseq), it runs, in order:

1. the real commands (gpu_stages.py): a generated corpus and fairseq-made
   checkpoints first (a tiny pretrained wav2vec 2.0, a wav2vec2-base-shaped
   one and a wav2vec 1.0 of wav2vec_large's shape, random weights), then
   ``fairseq-hydra-train --config-dir config --config-name <stage>`` for vft,
   ptapt_stage1 (wav2vec 1.0 and wav2vec 2.0 backbones), ptapt and tapt, each
   under ``common.fp16=true`` and ``common.bf16=true`` for a few updates;
   ``fairseq-ser evaluate`` and ``fairseq-ser predict`` on the V-FT
   checkpoint; ``fairseq-ser pseudo-labels run`` on a stage-1 model;
2. FAISS k-means (``faiss.Kmeans`` as ``fairseq-ser pseudo-labels`` runs it,
   20 iterations) for each ``--clusters`` K on ``--points`` x 768 points,
   then the assignment of 100k of them; on the GPU when FAISS sees one;
3. hand-written V-FT updates of a wav2vec2-base-shaped ``ser_wav2vec2_classifier``
   (random weights; the project's criterion and Adam) under bf16 autocast and
   fp16 autocast with a gradient scaler, and P-TAPT updates of a
   ``ser_wav2vec2_ptapt`` with heads K = 64, 512, 4096, on V-FT's batches:
   IEMOCAP-like lengths cropped to 10 s, ``min_padding`` batches of 64 on
   average (``--updates`` timed after ``--warmup``).

It prints ONE table (stage, precision, updates, s / update, peak GPU memory,
final loss finite or not, exit status; gpu_runner.py says how each is
measured) and, with ``--out DIR``, writes it there as gpu_table.md and
gpu_table.json, with every command's stdout/stderr in logs/ and the last
lines of each failure in failures/. A part that fails is a row marked failed
and the next part runs. ``--time-budget S`` skips what would start after S
seconds. Exit status: 0 when every row is ok or skipped, 1 otherwise.

Without a GPU it prints that it found none and exits 0; ``--device cpu`` runs
the same code on the CPU at tiny sizes (bf16 only: fairseq's fp16 asserts
CUDA; tiny models) to check the code path; its timings are not measurements.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(1, str(HERE.parent))  # tests/: checkpoints.py

from common import machine_description, print_summary  # noqa: E402
from gpu_runner import Row, Runner  # noqa: E402

SAMPLE_RATE = 16000
CROP = 160000  # config/vft.yaml and config/ptapt.yaml: task.max_sample_size
PARTS = ("commands", "kmeans", "loops")


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


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_updates(model, criterion, make_sample, batches, precision, device, warmup):
    """(s / update, utterances / s, audio s / s, last loss) over ``batches`` after ``warmup`` untimed updates."""
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
        synchronize(device)
        start = time.perf_counter()
        loss = update(lengths, warmup + step)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    utterances = sum(len(b) for b in batches)
    audio = sum(float(b.sum()) for b in batches) / SAMPLE_RATE
    return float(np.mean(seconds)), utterances / sum(seconds), audio / sum(seconds), float(loss.float().item())


def loop_row(row, batches, device, timed):
    per_update, utt_s, audio_s, loss = timed
    row.updates, row.s_per_update, row.final_loss, row.training = len(batches), per_update, loss, True
    row.gpu_allocated_mib = peak_allocated_mib(device)
    return None, f"{np.mean([len(b) for b in batches]):.1f} utterances / update, {utt_s:.1f} utterances / s, " \
                 f"{audio_s:.0f} audio s / s"


def vft_loop(row, shape, batches, precision, device, warmup):
    """Hand-written V-FT updates of a random classifier under autocast."""
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

    model = random_classifier(classes, shape).to(device)
    # the untimed forward checks the output before anything is timed
    with torch.no_grad():
        logits = model(**make_sample(batches[0])["net_input"])
    if tuple(logits.shape) != (len(batches[0]), len(classes)) or not torch.isfinite(logits.float()).all():
        raise AssertionError(f"V-FT logits {tuple(logits.shape)} for a batch of {len(batches[0])}")
    reset_peak(device)
    return loop_row(row, batches, device,
                    time_updates(model, criterion, make_sample, batches, precision, device, warmup))


def ptapt_loop(row, shape, batches, precision, device, warmup, cluster_sizes=(64, 512, 4096)):
    """Hand-written P-TAPT updates of a random ``ser_wav2vec2_ptapt`` on random frame labels."""
    import torch
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    from bench_batching import backbone_args
    from fairseq_ser.criterions.ser_ptapt_cross_entropy import SerPtaptCrossEntropyCriterion
    from fairseq_ser.data.frame_label_dataset import LABEL_PAD
    from fairseq_ser.frames import num_frames as cnn_frames
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
        valid = torch.arange(frames, device=device)[None, :] < torch.as_tensor(
            [cnn_frames(int(n)) for n in lengths], device=device)[:, None]
        targets = [torch.randint(0, k, (len(lengths), frames), device=device, generator=gen).masked_fill(
            ~valid, LABEL_PAD) for k in cluster_sizes]
        return {"net_input": {"source": source, "padding_mask": padding}, "target_list": targets,
                "nsentences": len(lengths)}

    reset_peak(device)
    return loop_row(row, batches, device,
                    time_updates(model, criterion, make_sample, batches, precision, device, warmup))


def kmeans_points(points, dim, centres, device):
    """float32 points around random centres, generated on the device, returned on the host as FAISS wants."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    c = torch.randn(centres, dim, device=device, generator=gen)
    owner = torch.randint(0, centres, (points,), device=device, generator=gen)
    return (c[owner] + 0.5 * torch.randn(points, dim, device=device, generator=gen)).float().cpu().numpy()


def kmeans_run(row, x, k, niter, device):
    """FAISS k-means as the project runs it (faiss.Kmeans, niter, seed 1), on the GPU when FAISS sees one."""
    from fairseq_ser.clustering.faiss_import import import_faiss

    faiss = import_faiss()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    use_gpu = device.type == "cuda" and gpus > 0
    if device.type == "cuda" and not use_gpu:
        x = x[:65536]
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=1, gpu=use_gpu, verbose=False)
    start = time.perf_counter()
    km.train(x)
    assigned = min(len(x), 100_000)
    _, ids = km.index.search(x[:assigned], 1)
    seconds = time.perf_counter() - start
    if km.centroids.shape != (k, x.shape[1]) or not np.isfinite(km.centroids).all() or ids.max() >= k:
        raise AssertionError(f"k-means returned centroids {km.centroids.shape}")
    row.stage = f"FAISS k-means K={k} on {len(x):,} x {x.shape[1]}, {niter} iterations + assigning {assigned:,}"
    where = f"{gpus} GPU(s)" if use_gpu else "the CPU" + (
        " (FAISS sees no GPU: 64k-point sample)" if device.type == "cuda" else "")
    return None, f"{seconds:.2f} s train + assign on {where}; objective {km.obj[-1]:.4g}"


def reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_allocated_mib(device):
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def run_loops(runner, args, device):
    import torch

    if device.type == "cuda":
        shape = None  # fairseq's Wav2Vec2Config defaults: wav2vec2-base
        batches = pick(make_batches(5531, args.batch_size, seed=1), args.updates)
        precisions = ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
        warmup = args.warmup
    else:
        from bench_batching import SMALL_SHAPE

        shape, warmup, precisions = SMALL_SHAPE, min(args.warmup, 1), ["bf16", "fp16"]
        batches = pick(make_batches(64, 4, seed=1, max_seconds=2.0), 1)
    for precision in precisions:
        label = "V-FT hand-written loop (autocast" + (" + GradScaler)" if precision == "fp16" else ")")
        runner.call(label, lambda row: vft_loop(row, shape, batches, precision, device, warmup), precision)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    runner.call("P-TAPT hand-written loop (K = 64, 512, 4096; autocast)",
                lambda row: ptapt_loop(row, shape, batches, precisions[0], device, warmup), precisions[0])


def run_kmeans(runner, args, device):
    if device.type == "cuda":
        points, dim, clusters, niter = args.points, 768, args.clusters, args.niter
    else:
        points, dim, clusters, niter = 20_000, 64, [16, 64], 5
    x = runner.call("setup: k-means points (random centres)",
                    lambda row: (kmeans_points(points, dim, max(clusters), device), f"{points:,} x {dim} float32"))
    if x is None:
        return
    for k in clusters:
        runner.call(f"FAISS k-means K={k}", lambda row: kmeans_run(row, x, k, niter, device), "fp32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto: the GPU if there is one, else print that there is none and stop; "
                        "cpu: the same code on the CPU at tiny sizes (a check of the code path, not a "
                        "measurement) (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write gpu_table.md, gpu_table.json, logs/ and failures/ here")
    parser.add_argument("--work", type=Path, metavar="DIR",
                        help="corpus, checkpoints and runs (default: a temporary folder, removed at the end)")
    parser.add_argument("--keep-work", action="store_true", help="keep the --work folder")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to run (default: all of %(choices)s)")
    parser.add_argument("--time-budget", type=float, metavar="S",
                        help="skip every part that would start after S seconds (default: no limit)")
    parser.add_argument("--stage-updates", type=int,
                        help="updates of every training command (default: 12 on a GPU, 3 on the CPU)")
    parser.add_argument("--quick", action="store_true", help="3 timed loop updates, k-means on 200k points")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="loops: utterances per update on average, as dataset.batch_size (default: %(default)s)")
    parser.add_argument("--updates", type=int, default=10, help="loops: timed updates per row (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="loops: untimed updates first (default: %(default)s)")
    parser.add_argument("--points", type=int, default=1_000_000, help="k-means points (default: %(default)s)")
    parser.add_argument("--clusters", type=int, nargs="+", default=[64, 512, 4096],
                        help="k-means K, one row each (default: %(default)s)")
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
    from gpu_stages import Stages, cpu_plan, gpu_plan

    if device.type == "cuda":
        plan = gpu_plan(**({"updates": args.stage_updates} if args.stage_updates else {}))
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
              flush=True)
    else:
        plan = cpu_plan(**({"updates": args.stage_updates} if args.stage_updates else {}))
        print("--device cpu: the code path on the CPU at tiny sizes, bf16 only (fairseq's fp16 asserts CUDA); "
              "not a measurement", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(device.type, plan.warmup, work, args.out, args.time_budget)
    start = time.perf_counter()
    try:
        parts = {}
        for part in PARTS:
            if part not in args.parts:
                continue
            t0 = time.perf_counter()
            if part == "commands":
                try:
                    Stages(runner, plan, work).run()
                except FileNotFoundError as e:  # a console script is missing: no command can run
                    runner.add(Row("real commands", exit="failed", note=str(e)))
            elif part == "loops":
                run_loops(runner, args, device)
            else:
                run_kmeans(runner, args, device)
            parts[part] = time.perf_counter() - t0
            print(f"[part] {part}: {parts[part]:.0f} s", flush=True)
    finally:
        runner.close()
        total = time.perf_counter() - start
        title = f"GPU: every stage as users run it ({'CUDA' if device.type == 'cuda' else 'CPU code-path check'})"
        runner.write_table(title, {"machine": machine_description(), "total_s": total, "parts_s": parts,
                                   "device": device.type, "stage_updates": plan.updates, "warmup": plan.warmup})
        print("\n" + runner.markdown(title))
        print(f"elapsed: {', '.join(f'{k} {v:.0f} s' for k, v in parts.items())}; total {total:.0f} s")
        if args.keep_work or args.work:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in runner.rows if not r.ok and not r.exit.startswith("skipped")]
    print_summary("gpu", {"device": device.type, "rows": len(runner.rows), "failed": len(failed),
                          "skipped": sum(r.exit.startswith("skipped") for r in runner.rows), "total_s": total})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

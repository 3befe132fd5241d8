"""Inference: ``fairseq-ser predict`` against transformers' ``Wav2Vec2ForSequenceClassification``.

Both models have wav2vec2-base's shape and random weights (7 classes, EmoDB's):
ours a ``ser_wav2vec2_classifier`` saved as fairseq-hydra-train saves one,
theirs ``Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=7))``
saved with ``save_pretrained``. Each side runs in its own process with the
same number of threads (OMP_NUM_THREADS and torch.set_num_threads) on the same
folder of EmoDB files, read with soundfile:

- ours: the ``fairseq-ser predict --checkpoint CKPT FOLDER -o out.jsonl`` command itself
  (length-sorted batches of at most 160 s of padded audio, the CNN run per
  utterance, so that a prediction does not depend on its batch);
- transformers, one file at a time: the way its documentation prescribes for
  base-style models (group-norm CNN, no attention mask), where padding would
  change the outputs;
- transformers, padded batches: length-sorted batches of the same 160 s
  budget, zero-padded by the feature extractor without an attention mask:
  its fastest CPU use, though each output then depends on its batch.

Timed: the whole process (start-up, imports, model load, reading, inference,
writing the results) and, inside it, the processing alone (reading, inference,
writing; without start-up and model load). The sides run in turn, ``--repeats``
times, and each side's fastest run is kept: on a shared machine, the run least
disturbed by other work. Real-time factor here = seconds of
audio per second of processing (higher is faster). Peak memory is each
process's peak resident set (``wait4``). A first run on 3 files checks that
every side returns one probability row per file over the 7 classes.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from common import EMODB, gib, machine_description, print_summary, print_table, run_measured  # noqa: E402

SAMPLE_RATE = 16000
BATCH_SECONDS = 160.0  # fairseq-ser predict's default --batch-seconds, used for transformers' batches too
HF_MODES = ("single", "padded")
HF_LABELS = {"single": "transformers, one file at a time",
             "padded": f"transformers, padded batches of {BATCH_SECONDS:.0f} s"}


def pick_files(emodb, count):
    """``count`` EmoDB files spread evenly over the sorted names (all speakers and emotions)."""
    names = sorted((Path(emodb) / "wav").glob("*.wav"))
    if count >= len(names):
        return names
    return [names[int(i * len(names) / count)] for i in range(count)]


def audio_seconds(files):
    import soundfile as sf

    return sum(sf.info(str(f)).frames for f in files) / SAMPLE_RATE


def thread_env(threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


# ---------------------------------------------------------------- the two models

def make_our_checkpoint(path, class_names):
    from bench_batching import random_classifier, save_classifier

    model = random_classifier(class_names)  # fairseq's Wav2Vec2Config defaults: wav2vec2-base
    cfg = model.backbone.cfg
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.extractor_mode) == (12, 768, "default"), cfg
    save_classifier(model, path)
    return sum(p.numel() for p in model.parameters())


def make_hf_model(folder, num_labels):
    from hf_transformers import import_transformers

    transformers = import_transformers()
    import torch

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(num_labels=num_labels)  # defaults: wav2vec2-base, group-norm CNN
    model = transformers.Wav2Vec2ForSequenceClassification(config)
    model.save_pretrained(folder)
    # facebook/wav2vec2-base's preprocessor settings
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                          do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- the transformers worker (its own process)

def hf_worker(args):
    """Load the saved model, predict every file of the folder, save the probabilities; print timings."""
    from hf_transformers import import_transformers

    transformers = import_transformers()
    import soundfile as sf
    import torch

    torch.set_num_threads(args.threads)
    files = sorted(Path(args.folder).glob("*.wav"))
    start = time.perf_counter()
    model = transformers.Wav2Vec2ForSequenceClassification.from_pretrained(args.model).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(args.model)
    loaded = time.perf_counter()
    wavs = [sf.read(str(f), dtype="float32")[0] for f in files]
    if args.mode == "single":
        batches = [[i] for i in range(len(wavs))]
    else:
        order = np.argsort([len(w) for w in wavs], kind="stable")
        batches, current = [], []
        for i in order:
            if current and len(wavs[i]) * (len(current) + 1) > BATCH_SECONDS * SAMPLE_RATE:
                batches.append(current)
                current = []
            current.append(int(i))
        batches.append(current)
    probs = np.zeros((len(wavs), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for batch in batches:
            inputs = extractor([wavs[i] for i in batch], sampling_rate=SAMPLE_RATE, padding=True,
                               return_tensors="pt")
            probs[batch] = torch.softmax(model(**inputs).logits, dim=-1).numpy()
    with open(args.out, "w", encoding="utf-8") as f:
        for path, p in zip(files, probs):
            f.write(json.dumps({"path": str(path), "probabilities": p.tolist()}) + "\n")
    done = time.perf_counter()
    print("BENCH " + json.dumps({"load": loaded - start, "processing": done - loaded}), flush=True)
    return 0


# ---------------------------------------------------------------- running and checking each side

def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def probability_matrix(rows, files, num_classes, side):
    """``(files, classes)`` probabilities of a side's output, in ``files`` order; checked."""
    by_name = {}
    for row in rows:
        if row.get("error"):
            raise AssertionError(f"{side}: {row['path']}: {row['error']}")
        probs = row["probabilities"]
        values = list(probs.values()) if isinstance(probs, dict) else probs
        by_name[Path(row["path"]).name] = values
    missing = [f.name for f in files if f.name not in by_name]
    if missing or len(by_name) != len(files):
        raise AssertionError(f"{side}: {len(by_name)} results for {len(files)} files (missing {missing[:3]})")
    matrix = np.array([by_name[f.name] for f in files], dtype=np.float64)
    if matrix.shape != (len(files), num_classes):
        raise AssertionError(f"{side}: output shape {matrix.shape}, expected {(len(files), num_classes)}")
    if not np.allclose(matrix.sum(1), 1.0, atol=1e-3):
        raise AssertionError(f"{side}: probabilities do not sum to 1")
    return matrix


# fairseq-ser predict's closing line: "predicted 3 of 3 files (0 failed): 7.0 s of audio in 3 windows, 5.4 s on cpu, ..."
PREDICT_LINE = re.compile(r"predicted (\d+) of (\d+) files.*?, ([\d.]+) s on ")


def run_ours(ckpt, folder, out, threads):
    """``fairseq-ser predict`` in its own process: (wall s, processing s, peak RSS, output rows)."""
    exe = Path(sys.executable).with_name("fairseq-ser")
    argv = ([exe] if exe.exists() else [sys.executable, "-m", "fairseq_ser.cli.main"])
    argv += ["predict", "--checkpoint", ckpt, folder, "-o", out, "--device", "cpu",
             "--batch-seconds", str(BATCH_SECONDS), "--no-progress"]
    wall, rss, output = run_measured(argv, env=thread_env(threads))
    match = PREDICT_LINE.search(output)
    if match is None:
        raise AssertionError(f"fairseq-ser predict printed no 'predicted N of N files ..., S s on DEVICE' line:\n{output[-2000:]}")
    if match.group(1) != match.group(2):
        raise AssertionError(f"fairseq-ser predict failed on some files:\n{output[-2000:]}")
    return wall, float(match.group(3)), rss, read_jsonl(out)


def run_hf(model_dir, folder, out, threads, mode):
    argv = [sys.executable, __file__, "--worker", "--model", model_dir, "--folder", folder, "--out", out,
            "--threads", str(threads), "--mode", mode]
    wall, rss, output = run_measured(argv, env=thread_env(threads))
    line = next((line for line in output.splitlines() if line.startswith("BENCH ")), None)
    if line is None:
        raise AssertionError(f"transformers worker printed no timings:\n{output[-2000:]}")
    return wall, json.loads(line[6:])["processing"], rss, read_jsonl(out)


def copy_files(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    return sorted(folder.glob("*.wav"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24,
                        help="EmoDB files to predict, spread over the corpus (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each side, interleaved; the table shows each side's fastest "
                        "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="8 files and one run of each side (about two minutes)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of both sides (default: all cores, %(default)s)")
    parser.add_argument("--hf-modes", nargs="+", choices=HF_MODES, default=list(HF_MODES),
                        help="transformers runs: one file at a time, and/or padded batches (default: both)")
    parser.add_argument("--emodb", default=str(EMODB), help="EmoDB folder (with wav/) (default: %(default)s)")
    # the transformers side, run by this script in a child process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=HF_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return hf_worker(args)
    if args.quick:
        args.files, args.repeats = min(args.files, 8), 1
    import warnings

    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
    print(f"machine: {machine_description()}", flush=True)
    from hf_transformers import import_transformers

    transformers = import_transformers()
    if transformers is None:
        print("transformers is not installed (pip install -c constraints.txt '.[bench]'): nothing to compare")
        print_summary("inference", {"skipped": "no-transformers"})
        return 0
    if not (Path(args.emodb) / "wav").is_dir():
        print(f"EmoDB not found at {args.emodb}: nothing to predict")
        print_summary("inference", {"skipped": "no-emodb"})
        return 0
    from bench_batching import EMODB_CLASSES

    class_names = sorted(EMODB_CLASSES.values())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp = Path(tmp)
        ours_params = make_our_checkpoint(str(tmp / "ours.pt"), class_names)
        hf_params = make_hf_model(str(tmp / "hf"), len(class_names))
        print(f"parameters: ours {ours_params / 1e6:.1f} M, transformers {hf_params / 1e6:.1f} M; "
              f"transformers {transformers.__version__}; {args.threads} threads each", flush=True)

        sides = {"fairseq-ser predict": None, **{HF_LABELS[m]: m for m in args.hf_modes}}

        def run_side(mode, folder, out):
            if mode is None:
                return run_ours(str(tmp / "ours.pt"), str(folder), str(out), args.threads)
            return run_hf(str(tmp / "hf"), str(folder), str(out), args.threads, mode)

        # check run: 3 files, one probability row per file over the classes on every side
        check_files = copy_files(pick_files(args.emodb, 3), tmp / "check")
        for k, (name, mode) in enumerate(sides.items()):
            probability_matrix(run_side(mode, tmp / "check", tmp / f"check_{k}.jsonl")[3], check_files,
                               len(class_names), name)

        files = copy_files(pick_files(args.emodb, args.files), tmp / "audio")
        seconds = audio_seconds(files)
        print(f"{len(files)} EmoDB files, {seconds:.1f} s of audio; {args.repeats} run(s) of each side, "
              "in turn", flush=True)
        runs = {name: [] for name in sides}
        for repeat in range(args.repeats):
            for k, (name, mode) in enumerate(sides.items()):
                wall, proc, rss, rows = run_side(mode, tmp / "audio", tmp / f"out_{k}_{repeat}.jsonl")
                probability_matrix(rows, files, len(class_names), name)
                runs[name].append((wall, proc, rss))
        # the fastest run of each side (the one least disturbed by other work on the machine)
        results = {name: (min(r[0] for r in rs), min(r[1] for r in rs), max(r[2] for r in rs))
                   for name, rs in runs.items()}
    ours = results["fairseq-ser predict"]
    rows = [[name, f"{wall:.1f}", f"{proc:.1f}", f"{seconds / proc:.2f}", f"{seconds / wall:.2f}", gib(rss)]
            for name, (wall, proc, rss) in results.items()]
    print_table(f"Inference on {len(files)} EmoDB files ({seconds:.0f} s of audio), wav2vec2-base shape, "
                f"{args.threads} threads",
                ["", "process wall s", "processing s", "real-time factor (processing)",
                 "real-time factor (whole process)", "peak RSS"], rows)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    # every ratio is transformers / ours: above 1 favours fairseq-ser predict
    summary = {}
    for mode in args.hf_modes:
        wall, proc, rss = results[HF_LABELS[mode]]
        summary[f"speed_vs_hf_{mode}"] = proc / ours[1]
        summary[f"wall_vs_hf_{mode}"] = wall / ours[0]
        summary[f"memory_vs_hf_{mode}"] = rss / ours[2]
    print_summary("inference", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

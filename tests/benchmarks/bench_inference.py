"""Inference: ``fairseq-ser predict`` (PyTorch, ONNX fp32, ONNX int8) against transformers.

Both models have wav2vec2-base's shape and random weights (7 classes, EmoDB's):
ours a ``ser_wav2vec2_classifier`` saved as fairseq-hydra-train saves one,
theirs ``Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=7))``
saved with ``save_pretrained``. Each side runs in its own process with the
same number of threads (OMP_NUM_THREADS and torch.set_num_threads) on the same
folder of EmoDB files, read with soundfile:

- ours, PyTorch: the ``fairseq-ser predict --checkpoint CKPT FOLDER -o out.jsonl``
  command itself (on the CPU each of the threads runs one file at a time,
  unpadded; a prediction never depends on its batch);
- ours, ONNX fp32 and int8: ``fairseq-ser export CKPT model.onnx --quantize int8``
  once (not timed), then ``fairseq-ser predict --backend onnx --checkpoint
  model.onnx`` / ``model.int8.onnx`` with onnxruntime, the same batches;
- ours, PyTorch under bf16 autocast: the same command with ``--precision bf16``
  (``--no-bf16`` leaves it out);
- transformers, one file at a time: the way its documentation prescribes for
  base-style models (group-norm CNN, no attention mask), where padding would
  change the outputs;
- transformers, padded batches: length-sorted batches of the same 160 s
  budget, zero-padded by the feature extractor without an attention mask:
  each output then depends on its batch.

Timed: the whole process (start-up, imports, model load, reading, inference,
writing the results) and, inside it, the processing alone (reading, inference,
writing; without start-up and model load). The sides run in turn, ``--repeats``
times, and each side's fastest run is kept: on a shared machine, the run least
disturbed by other work. Real-time factor here = seconds of audio per second
of processing (higher is faster). Peak memory is each process's peak resident
set (``wait4``). A first run on 3 files checks that every side returns one
probability row per file over the 7 classes; the ONNX and bf16 sides' largest
probability difference from ours in PyTorch (fp32) is shown beside them. After the
timed runs, the files' forward-pass cost is counted (``torch.utils.flop_counter``)
and torch's float32 matrix products of the model's shapes are timed on the
same threads: each side's GFLOP/s against what this machine's products reach.

``--profile`` instead times the parts of one forward pass (CNN, feature
projection, positional convolution, attention, feed-forward, layer norms) of
both models in this process, in turn, on a 2.5 s and an 8 s utterance and a
padded batch: where the time goes.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
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
TORCH, ONNX_FP32, ONNX_INT8 = "fairseq-ser predict", "fairseq-ser predict, ONNX fp32", "fairseq-ser predict, ONNX int8"
TORCH_BF16 = "fairseq-ser predict --precision bf16"
SUMMARY_KEYS = {TORCH: "torch", TORCH_BF16: "torch_bf16", ONNX_FP32: "onnx_fp32", ONNX_INT8: "onnx_int8"}


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


def fairseq_ser_argv(*args):
    exe = Path(sys.executable).with_name("fairseq-ser")
    return ([exe] if exe.exists() else [sys.executable, "-m", "fairseq_ser.cli.main"]) + list(args)


# ---------------------------------------------------------------- the models

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


def export_onnx(ckpt, tmp, verify_folder, threads):
    """``fairseq-ser export CKPT model.onnx --quantize int8``: ({side: model path}, what it printed),
    or ({}, why not)."""
    help_proc = subprocess.run([str(a) for a in fairseq_ser_argv("export", "--help")], capture_output=True,
                               text=True, env=thread_env(threads))
    if help_proc.returncode != 0:
        return {}, "skipped: export command not available"
    out = tmp / "model.onnx"
    try:
        wall, _, output = run_measured(fairseq_ser_argv("export", ckpt, out, "--quantize", "int8",
                                                        "--verify-audio", verify_folder, "--no-progress"),
                                       env=thread_env(threads))
    except RuntimeError as e:
        return {}, f"skipped: fairseq-ser export failed: {str(e).strip().splitlines()[-1]}"
    int8 = out.with_name("model.int8.onnx")
    if not (out.is_file() and int8.is_file()):
        return {}, f"skipped: fairseq-ser export wrote no {out.name} and {int8.name}:\n{output[-1000:]}"
    lines = [line for line in output.splitlines() if line.startswith("wrote ")]
    return {ONNX_FP32: out, ONNX_INT8: int8}, f"exported in {wall:.0f} s: " + " / ".join(lines)


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


def run_ours(model, folder, out, threads, backend="torch", precision="fp32"):
    """``fairseq-ser predict`` in its own process: (wall s, processing s, peak RSS, output rows)."""
    argv = fairseq_ser_argv("predict", "--backend", backend, "--checkpoint", model, folder, "-o", out,
                            "--device", "cpu", "--batch-seconds", str(BATCH_SECONDS), "--no-progress",
                            *(["--precision", precision] if precision != "fp32" else []))
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


def forward_flops(files, class_names):
    """Floating-point operations of one forward pass of the wav2vec2-base classifier over each of ``files``,
    counted by ``torch.utils.flop_counter`` (matrix products and convolutions; the weights do not matter)."""
    import soundfile as sf
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench_batching import random_classifier

    model, total = random_classifier(class_names).eval(), 0
    with torch.inference_mode():
        for path in files:
            wav, _ = sf.read(str(path), dtype="float32")
            counter = FlopCounterMode(display=False)
            with counter:
                model(torch.from_numpy(wav)[None], padding_mask=None)
            total += counter.get_total_flops()
    return total


GEMM_SHAPES = ((500, 768, 768), (500, 768, 3072), (2000, 768, 3072))  # frames x in by in x out


def gemm_rates(threads, repeats=30):
    """GFLOP/s of torch's float32 matrix products of the model's shapes on ``threads`` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rates = []
    try:
        for m, k, n in GEMM_SHAPES:
            a, b = torch.randn(m, k), torch.randn(k, n)
            for _ in range(5):
                a @ b
            began = time.perf_counter()
            for _ in range(repeats):
                a @ b
            rates.append(2 * m * k * n * repeats / (time.perf_counter() - began) / 1e9)
    finally:
        torch.set_num_threads(before)
    return rates


def copy_files(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    return sorted(folder.glob("*.wav"))


# ---------------------------------------------------------------- --profile: where the time goes

# the parts of a forward pass: (ours: module paths under the classifier, transformers': under the model)
PARTS = {
    "CNN": (["backbone.feature_extractor"], ["wav2vec2.feature_extractor"]),
    "feature projection": (["backbone.layer_norm", "backbone.post_extract_proj"], ["wav2vec2.feature_projection"]),
    "positional conv": (["backbone.encoder.pos_conv"], ["wav2vec2.encoder.pos_conv_embed"]),
    "attention": (["backbone.encoder.layers.*.self_attn"], ["wav2vec2.encoder.layers.*.attention"]),
    "feed-forward": (["backbone.encoder.layers.*.fc1", "backbone.encoder.layers.*.fc2"],
                     ["wav2vec2.encoder.layers.*.feed_forward"]),
    "layer norms": (["backbone.encoder.layers.*.self_attn_layer_norm", "backbone.encoder.layers.*.final_layer_norm"],
                    ["wav2vec2.encoder.layers.*.layer_norm", "wav2vec2.encoder.layers.*.final_layer_norm"]),
}
PROFILE_SHAPES = {"one 2.5 s utterance": [40000], "one 8 s utterance": [128000],
                  "padded batch of 4 (2.1 to 2.6 s)": [33600, 36000, 38400, 41600]}


class PartTimer:
    """Seconds spent in modules, summed per part, with forward hooks (the CPU runs synchronously)."""

    clock = time.perf_counter

    def __init__(self, model, patterns):
        self.seconds, self.handles, self.started = defaultdict(float), [], {}
        for part, paths in patterns.items():
            for name, module in model.named_modules():
                if any(re.fullmatch(p.replace(".", r"\.").replace("*", r"\d+"), name) for p in paths):
                    self.handles += [module.register_forward_pre_hook(self._pre),
                                     module.register_forward_hook(self._post(part))]

    def _pre(self, module, inputs):
        self.started[id(module)] = PartTimer.clock()

    def _post(self, part):
        def hook(module, inputs, output):
            self.seconds[part] += PartTimer.clock() - self.started.pop(id(module))
        return hook


def profile(args, class_names):
    """Per-part times of one forward pass of each model, same inputs, in turn; the fastest of ``--repeats``.

    On a padded batch ours also runs its GPU path on the CPU (the batched CNN
    whose first group norm takes each utterance's valid frames only), to show
    what running the CNN on each utterance's own samples saves there.
    """
    import torch
    from bench_batching import random_classifier
    from hf_transformers import import_transformers

    import fairseq_ser.models.masked_encoder as masked_encoder

    torch.set_num_threads(args.threads)
    clock = PartTimer.clock = time.process_time if args.clock == "cpu" else time.perf_counter
    transformers = import_transformers()
    ours = random_classifier(class_names).eval()
    torch.manual_seed(0)
    theirs = transformers.Wav2Vec2ForSequenceClassification(
        transformers.Wav2Vec2Config(num_labels=len(class_names))).eval()
    our_timer = PartTimer(ours, {k: v[0] for k, v in PARTS.items()})
    their_timer = PartTimer(theirs, {k: v[1] for k, v in PARTS.items()})
    cpu_cnn = masked_encoder._cnn_each_alone

    def padded_cnn(implementation):
        # a padded batch of ours runs its CNN through masked_encoder, timed here as a whole
        def cnn(*a):
            began = clock()
            try:
                return implementation(*a)
            finally:
                our_timer.seconds["padded CNN"] += clock() - began
        return cnn

    def run_ours(cnn):
        def run(source, padding):
            masked_encoder._cnn_each_alone = padded_cnn(cnn)
            try:
                ours(source, padding_mask=padding)
            finally:
                masked_encoder._cnn_each_alone = cpu_cnn
        return run

    print(f"attention: transformers {theirs.config._attn_implementation}; ours fairseq MultiheadAttention "
          "(torch's multi_head_attention_forward)")
    rng = np.random.default_rng(0)
    for shape, lengths in PROFILE_SHAPES.items():
        source = torch.zeros(len(lengths), max(lengths))
        padding = torch.ones(len(lengths), max(lengths), dtype=torch.bool)
        for i, n in enumerate(lengths):
            source[i, :n] = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1)
            padding[i, :n] = False
        padded = len(lengths) > 1
        sides = {"ours": (our_timer, run_ours(cpu_cnn))}
        if padded:
            sides["ours, batched group norm"] = (our_timer, run_ours(masked_encoder._per_utterance_cnn))
        # base: no attention mask, as transformers runs base-style models
        sides["transformers"] = (their_timer, lambda source, padding: theirs(source))
        runs = {side: [] for side in sides}
        with torch.inference_mode():
            for repeat in range(args.repeats + 1):  # the first round warms up
                for side, (timer, run) in sides.items():
                    timer.seconds.clear()
                    began = clock()
                    run(source, padding if padded else None)
                    if repeat:
                        seconds = dict(timer.seconds)
                        if "padded CNN" in seconds:
                            seconds["CNN"] = seconds.pop("padded CNN")
                        runs[side].append({**seconds, "whole forward": clock() - began})
        best = {side: {k: min(r.get(k, 0.0) for r in rs) for k in rs[0]} for side, rs in runs.items()}
        rows = [[part, *(f"{1000 * best[side].get(part, 0):.0f}" for side in sides),
                 f"{best['ours'].get(part, 0) / best['transformers'][part]:.2f}"]
                for part in [*PARTS, "whole forward"]]
        print_table(f"{shape}: ms ({args.clock} time) per forward pass, {args.threads} threads "
                    f"(fastest of {args.repeats})",
                    ["part", *sides, "ours / transformers"], rows)
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


# ---------------------------------------------------------------- --in-process: the models alone, by CPU time

def in_process(args, sides, files, seconds, hf_dir):
    """Each side's model on the same decoded audio in this process, in turn; the fastest of ``--repeats``.

    Without process start-up, loading and file reading; with ``--clock cpu``
    the time is this process's CPU time, which other work on a busy machine
    disturbs far less than the wall clock (use ``--threads 1``: with more,
    threads waiting for each other count as well).
    """
    import soundfile as sf
    import torch
    from hf_transformers import import_transformers

    from fairseq_ser.inference import EmotionClassifier

    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    wavs = [sf.read(str(f), dtype="float32")[0] for f in files]
    budget = int(BATCH_SECONDS * SAMPLE_RATE)
    runners = {}
    for name, model in sides.items():
        if name == TORCH:
            clf = EmotionClassifier.from_checkpoint(str(model), device="cpu")
        else:
            from fairseq_ser.onnx_predictor import OnnxEmotionClassifier

            clf = OnnxEmotionClassifier.from_file(str(model), device="cpu", threads=args.threads)
        runners[name] = lambda clf=clf: clf.predict_proba(wavs, max_batch_samples=budget)
    transformers = import_transformers()
    hf = transformers.Wav2Vec2ForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(hf_dir))

    def run_hf(batches):
        probs = np.zeros((len(wavs), hf.config.num_labels), dtype=np.float32)
        with torch.inference_mode():
            for batch in batches:
                inputs = extractor([wavs[i] for i in batch], sampling_rate=SAMPLE_RATE, padding=True,
                                   return_tensors="pt")
                probs[batch] = torch.softmax(hf(**inputs).logits, dim=-1).numpy()
        return probs

    order = np.argsort([len(w) for w in wavs], kind="stable")
    padded, current = [], []
    for i in order:
        if current and len(wavs[i]) * (len(current) + 1) > budget:
            padded.append(current)
            current = []
        current.append(int(i))
    padded.append(current)
    batches = {"single": [[i] for i in range(len(wavs))], "padded": padded}
    for mode in args.hf_modes:
        runners[HF_LABELS[mode]] = lambda mode=mode: run_hf(batches[mode])
    times, probs = {name: [] for name in runners}, {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, run in runners.items():
            began = clock()
            probs[name] = run()
            if repeat:
                times[name].append(clock() - began)
                print(f"  {name}: {times[name][-1]:.1f} s", flush=True)
    best = {name: min(t) for name, t in times.items()}
    rows = []
    for name, t in best.items():
        diff = ""
        if name in (ONNX_FP32, ONNX_INT8):
            changed = int((probs[name].argmax(1) != probs[TORCH].argmax(1)).sum())
            diff = f"{np.abs(probs[name] - probs[TORCH]).max():.1e} ({changed} of {len(files)} labels changed)"
        rows.append([name, f"{t:.1f}", f"{seconds / t:.2f}", diff])
    print_table(f"The models alone, in one process: {len(files)} EmoDB files ({seconds:.0f} s of audio), "
                f"{args.threads} threads, {args.clock} time (fastest of {args.repeats})",
                ["", "seconds", "real-time factor", "max abs difference from PyTorch"], rows)
    print(f"\nload average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    summary = {f"speed_vs_hf_{mode}": best[HF_LABELS[mode]] / best[TORCH] for mode in args.hf_modes}
    for name in (ONNX_FP32, ONNX_INT8):
        if name in best:
            summary[f"{SUMMARY_KEYS[name]}_speedup"] = best[TORCH] / best[name]
    print_summary("inference_in_process", summary)
    return 0


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24,
                        help="EmoDB files to predict, spread over the corpus (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each side, interleaved; the table shows each side's fastest "
                        "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="8 files and one run of each side (about three minutes)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of every side (default: all cores, %(default)s)")
    parser.add_argument("--hf-modes", nargs="+", choices=HF_MODES, default=list(HF_MODES),
                        help="transformers runs: one file at a time, and/or padded batches (default: both)")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the ONNX fp32 and int8 sides")
    parser.add_argument("--no-bf16", action="store_true",
                        help="leave out the PyTorch side under bf16 autocast (fast where the CPU has "
                        "AVX512-BF16 or AMX; emulated, maybe slower than fp32, elsewhere)")
    parser.add_argument("--in-process", action="store_true",
                        help="time each side's model alone on the decoded files in this process (no start-up, "
                        "loading or reading; with --clock cpu, steady on a busy machine) instead of the commands")
    parser.add_argument("--profile", action="store_true",
                        help="time the parts of one forward pass of each model instead (CNN, attention, ...)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="--profile, --in-process: time by the wall clock, or by this process's CPU time "
                        "(steadier on a busy machine; use --threads 1, or threads waiting for each other "
                        "count too) (default: %(default)s)")
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
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    from hf_transformers import import_transformers

    transformers = import_transformers()
    if transformers is None:
        print("transformers is not installed (pip install -c constraints.txt '.[bench]'): nothing to compare")
        print_summary("inference", {"skipped": "no-transformers"})
        return 0
    from bench_batching import EMODB_CLASSES

    class_names = sorted(EMODB_CLASSES.values())
    if args.profile:
        return profile(args, class_names)
    if not (Path(args.emodb) / "wav").is_dir():
        print(f"EmoDB not found at {args.emodb}: nothing to predict")
        print_summary("inference", {"skipped": "no-emodb"})
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "ours.pt"
        ours_params = make_our_checkpoint(str(ckpt), class_names)
        hf_params = make_hf_model(str(tmp / "hf"), len(class_names))
        print(f"parameters: ours {ours_params / 1e6:.1f} M, transformers {hf_params / 1e6:.1f} M; "
              f"transformers {transformers.__version__}; {args.threads} threads each", flush=True)
        check_files = copy_files(pick_files(args.emodb, 3), tmp / "check")
        onnx_models, onnx_note = ({}, "skipped: --no-onnx") if args.no_onnx else \
            export_onnx(ckpt, tmp, tmp / "check", args.threads)
        print(f"ONNX: {onnx_note}", flush=True)
        if args.in_process:
            files = copy_files(pick_files(args.emodb, args.files), tmp / "audio")
            return in_process(args, {TORCH: ckpt, **onnx_models}, files, audio_seconds(files), tmp / "hf")

        sides = {TORCH: lambda folder, out: run_ours(ckpt, folder, out, args.threads)}
        if not args.no_bf16:
            sides[TORCH_BF16] = lambda folder, out: run_ours(ckpt, folder, out, args.threads, precision="bf16")
        for name, model in onnx_models.items():
            sides[name] = lambda folder, out, model=model: run_ours(model, folder, out, args.threads, "onnx")
        for mode in args.hf_modes:
            sides[HF_LABELS[mode]] = lambda folder, out, mode=mode: run_hf(tmp / "hf", folder, out,
                                                                          args.threads, mode)

        # check run: 3 files, one probability row per file over the classes on every side
        for k, (name, run) in enumerate(sides.items()):
            probability_matrix(run(tmp / "check", tmp / f"check_{k}.jsonl")[3], check_files, len(class_names), name)

        files = copy_files(pick_files(args.emodb, args.files), tmp / "audio")
        seconds = audio_seconds(files)
        print(f"{len(files)} EmoDB files, {seconds:.1f} s of audio; {args.repeats} run(s) of each side, "
              "in turn", flush=True)
        runs = {name: [] for name in sides}
        probs = {}
        for repeat in range(args.repeats):
            for k, (name, run) in enumerate(sides.items()):
                wall, proc, rss, rows = run(tmp / "audio", tmp / f"out_{k}_{repeat}.jsonl")
                probs[name] = probability_matrix(rows, files, len(class_names), name)
                runs[name].append((wall, proc, rss))
                print(f"  {name}: {proc:.1f} s processing, {wall:.1f} s in all, {gib(rss)}", flush=True)
        # the fastest run of each side (the one least disturbed by other work on the machine)
        results = {name: (min(r[0] for r in rs), min(r[1] for r in rs), max(r[2] for r in rs))
                   for name, rs in runs.items()}
        # after the timed runs, so that neither disturbs them
        flops = forward_flops(files, class_names)
        rates = gemm_rates(args.threads)
    differences = {}
    for name in [n for n in results if n in SUMMARY_KEYS and n != TORCH]:
        diff = np.abs(probs[name] - probs[TORCH])
        changed = int((probs[name].argmax(1) != probs[TORCH].argmax(1)).sum())
        differences[name] = (float(diff.max()), changed)
    rows = []
    for name, (wall, proc, rss) in results.items():
        diff = (f"{differences[name][0]:.1e} ({differences[name][1]} of {len(files)} labels changed)"
                if name in differences else "")
        rows.append([name, f"{wall:.1f}", f"{proc:.1f}", f"{seconds / proc:.2f}", f"{seconds / wall:.2f}",
                     f"{flops / proc / 1e9:.0f}", gib(rss), diff])
    print_table(f"Inference on {len(files)} EmoDB files ({seconds:.0f} s of audio), wav2vec2-base shape, "
                f"{args.threads} threads",
                ["", "process wall s", "processing s", "real-time factor (processing)",
                 "real-time factor (whole process)", "GFLOP/s (processing)", "peak RSS",
                 "max abs difference from PyTorch (outputs rounded to 1e-6)"], rows)
    print(f"\nthe files cost {flops / 1e9:.0f} GFLOP ({flops / 1e9 / seconds:.1f} per second of audio, "
          "torch.utils.flop_counter); torch's float32 matrix products of the model's shapes on "
          f"{args.threads} threads: " + ", ".join(f"{m}x{k} by {k}x{n} {r:.0f}" for (m, k, n), r in
                                                  zip(GEMM_SHAPES, rates)) + " GFLOP/s")
    if not onnx_models:
        print(f"ONNX fp32 and int8: {onnx_note}")
    print(f"\nload average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total {time.perf_counter() - start:.0f} s")
    # speed_ and wall_ ratios are the other side's time / ours in PyTorch, memory_ its peak RSS / ours:
    # above 1 favours fairseq-ser predict; onnx_*_speedup is PyTorch's time / the ONNX side's
    ours = results[TORCH]
    summary = {}
    for mode in args.hf_modes:
        wall, proc, rss = results[HF_LABELS[mode]]
        summary[f"speed_vs_hf_{mode}"] = proc / ours[1]
        summary[f"wall_vs_hf_{mode}"] = wall / ours[0]
        summary[f"memory_vs_hf_{mode}"] = rss / ours[2]
    for name in differences:   # ONNX fp32 and int8, PyTorch under bf16
        key = SUMMARY_KEYS[name]
        summary[f"{key}_speedup"] = ours[1] / results[name][1]
        summary[f"{key}_memory_vs_torch"] = results[name][2] / ours[2]
        summary[f"{key}_max_diff"] = f"{differences[name][0]:.1e}"
        for mode in args.hf_modes:
            summary[f"{key}_speed_vs_hf_{mode}"] = results[HF_LABELS[mode]][1] / results[name][1]
    if not onnx_models:
        summary["onnx"] = "skipped"
    summary["torch_gflops"] = f"{flops / ours[1] / 1e9:.0f}"
    summary["gemm_peak_gflops"] = f"{max(rates):.0f}"
    print_summary("inference", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end demo on the embedded synthetic corpus, in a few minutes on a CPU.

Generates the corpus, prepares speaker-independent manifests, pretrains a tiny
wav2vec 2.0 with fairseq's own audio_pretraining task (the stand-in for a
released checkpoint), fine-tunes it with V-FT (config/vft.yaml), evaluates on
held-out speakers and prints UA / WA / macro-F1 and the confusion matrix.
Every stage runs the same commands the README gives; their full logs go to
OUT/logs/. Run it from the repository root (it reads config/).
"""

import os
import re
import subprocess
import sys
import time

# Lines of fairseq's log worth showing while a stage runs: epoch summaries and validation.
_PROGRESS = re.compile(r"\]\[(train|valid)\]\[INFO\] - (epoch \d+ \|.*)")
_KEEP = ("loss", "ua", "wa", "macro_f1", "num_updates", "accuracy", "wall")


def add_arguments(parser):
    parser.add_argument("--out", default="demo_out", help="working folder (default: %(default)s)")
    parser.add_argument("--config-dir", default="config",
                        help="folder holding the stage yaml files (default: %(default)s)")
    parser.add_argument("--speakers", type=int, default=6, help="synthetic speakers (default: %(default)s)")
    parser.add_argument("--per-class", type=int, default=16,
                        help="utterances per speaker and class (default: %(default)s)")
    parser.add_argument("--pretrain-updates", type=int, default=300,
                        help="updates of the tiny wav2vec 2.0 pretraining (default: %(default)s)")
    parser.add_argument("--vft-epochs", type=int, default=20, help="V-FT epochs (default: %(default)s)")
    parser.add_argument("--vft-lr", type=float, default=5e-4,
                        help="V-FT learning rate; higher than the paper's 1e-4 because the "
                        "tiny model trains for minutes, not hours (default: %(default)s)")


def run_stage(name, argv, log_dir):
    """Run one command, showing its progress lines and keeping its whole log; fail loudly."""
    from ..errors import SerError

    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, f"{name}.log")
    print(f"\n== {name}: {' '.join(argv)}", flush=True)
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            log.write(line)
            m = _PROGRESS.search(line)
            if m:
                fields = [f.strip() for f in m.group(2).split("|")]
                shown = [fields[0]] + [f for f in fields[1:] if f.split(" ")[0] in _KEEP]
                print(f"   [{m.group(1)}] " + " | ".join(shown), flush=True)
        proc.wait()
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = "".join(f.readlines()[-25:])
        raise SerError(f"stage {name} failed (exit {proc.returncode}); log: {log_path}\n{tail}")
    seconds = time.time() - start
    print(f"   done in {seconds:.0f} s (log: {log_path})", flush=True)
    return seconds


def run(args):
    from ..data.corpora.custom import prepare_folder
    from ..data.synthetic import generate_corpus
    from ..errors import DataError
    from .evaluate import evaluate
    from .. import metrics

    config_dir = os.path.abspath(args.config_dir)
    if not os.path.isfile(os.path.join(config_dir, "vft.yaml")):
        raise DataError(f"{config_dir}: no vft.yaml here; run the demo from the repository root "
                        "or pass --config-dir")
    out = os.path.abspath(args.out)
    logs = os.path.join(out, "logs")
    bin_dir = os.path.dirname(sys.executable)
    hydra_train = os.path.join(bin_dir, "fairseq-hydra-train")
    timings = {}
    t0 = time.time()

    print(f"== corpus: {args.speakers} synthetic speakers x 4 emotions x {args.per_class} utterances", flush=True)
    corpus = os.path.join(out, "corpus")
    generate_corpus(corpus, num_speakers=args.speakers, utterances_per_class=args.per_class, seed=0)
    manifests = os.path.join(out, "manifests")
    result = prepare_folder(corpus, manifests, speaker_regex=r"^(spk\d+)_", folds=3)
    fold = os.path.join(manifests, "fold1")
    print("   fold1 (speaker-independent): " + ", ".join(
        f"{split} {sum(c.values())}" for split, c in result.counts["fold1"].items()), flush=True)
    timings["corpus + manifests"] = time.time() - t0

    pretrain_dir = os.path.join(out, "pretrain")
    timings["pretrain (tiny wav2vec 2.0)"] = run_stage("pretrain", [
        hydra_train, "--config-dir", config_dir, "--config-name", "pretrain_tiny",
        f"task.data={fold}", f"checkpoint.save_dir={pretrain_dir}",
        f"optimization.max_update={args.pretrain_updates}", "checkpoint.reset_optimizer=true",
    ], logs)
    w2v = os.path.join(pretrain_dir, "checkpoint_last.pt")

    vft_dir = os.path.join(out, "vft")
    timings["V-FT"] = run_stage("vft", [
        hydra_train, "--config-dir", config_dir, "--config-name", "vft",
        f"task.data={fold}", f"model.w2v_path={w2v}", f"checkpoint.save_dir={vft_dir}",
        "common.cpu=true", "common.fp16=false", "common.log_interval=10",
        "dataset.num_workers=0", "dataset.batch_size=8",
        f"optimization.max_epoch={args.vft_epochs}", f"optimization.lr=[{args.vft_lr}]",
        # 64 of wav2vec2-base's 768 channels, scaled to the tiny model's 48
        "model.mask_channel_length=4",
    ], logs)

    start = time.time()
    summary = evaluate(fold, os.path.join(vft_dir, "checkpoint_best.pt"), "test",
                       os.path.join(out, "eval-test"))
    timings["evaluate"] = time.time() - start

    print("\n== V-FT on held-out synthetic speakers (fold1 test)\n")
    print(metrics.format_report(summary))
    print(f"\nresults: {summary['results_path']}")
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {time.time() - t0:.0f} s")
    return 0

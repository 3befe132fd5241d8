"""End-to-end demo on the embedded synthetic corpus: V-FT, TAPT and P-TAPT side by side.

Generates the corpus, prepares speaker-independent manifests, pretrains a tiny
wav2vec 2.0 with fairseq's own audio_pretraining task (the stand-in for a
released checkpoint), then runs the three methods from it: V-FT directly,
TAPT (continued contrastive pretraining, then V-FT) and P-TAPT (a frame-level
emotion model, k-means pseudo-labels of its features, pseudo-label
pretraining, then V-FT). Each fine-tuned model is evaluated on held-out
speakers; a table compares them. Every stage runs the same commands the README
gives; their full logs go to OUT/logs/. Run it from the repository root (it
reads config/). The updates are scaled down to minutes on a CPU, so the
numbers show the pipeline working, not the paper's margins.
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
    parser.add_argument("--methods", default="vft,tapt,ptapt",
                        help="comma-separated methods to run (default: %(default)s)")
    parser.add_argument("--pretrain-updates", type=int, default=250,
                        help="updates of the tiny wav2vec 2.0 pretraining (default: %(default)s)")
    parser.add_argument("--adapt-updates", type=int, default=150,
                        help="updates of TAPT, of P-TAPT's frame emotion model and of P-TAPT "
                        "(default: %(default)s)")
    parser.add_argument("--ks", default="16,64,256",
                        help="k-means sizes of P-TAPT, scaled to the small corpus (the paper: "
                        "64,512,4096) (default: %(default)s)")
    parser.add_argument("--vft-epochs", type=int, default=15, help="V-FT epochs (default: %(default)s)")
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


class Demo:
    """The demo's stages; each method's commands are the README's, with CPU-sized overrides."""

    CPU = ["common.cpu=true", "common.fp16=false", "dataset.num_workers=0"]

    def __init__(self, args):
        self.args = args
        self.config_dir = os.path.abspath(args.config_dir)
        self.out = os.path.abspath(args.out)
        self.logs = os.path.join(self.out, "logs")
        self.hydra_train = os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")
        self.fold = os.path.join(self.out, "manifests", "fold1")
        self.timings = {}

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def train(self, name, config, overrides):
        argv = [self.hydra_train, "--config-dir", self.config_dir, "--config-name", config,
                f"task.data={self.fold}", f"checkpoint.save_dir={self.path(name)}", *self.CPU, *overrides]
        self.timings[name] = run_stage(name, argv, self.logs)

    def adapt_overrides(self):
        n = self.args.adapt_updates
        return [f"optimization.max_update={n}", "common.log_interval=25",
                f"checkpoint.save_interval_updates={n}", f"dataset.validate_interval_updates={n}"]

    def pretrain(self):
        self.train("pretrain", "pretrain_tiny", [f"optimization.max_update={self.args.pretrain_updates}"])
        return self.path("pretrain", "checkpoint_last.pt")

    def tapt(self, w2v):
        self.train("tapt", "tapt", [f"model.w2v_path={w2v}", "dataset.batch_size=8", "dataset.max_tokens=400000",
                                    "optimization.update_freq=[1]", "task.min_sample_size=8000",
                                    *self.adapt_overrides()])
        return self.path("tapt", "checkpoint_last.pt")

    def ptapt(self, w2v):
        self.train("ptapt_stage1", "ptapt_stage1", [f"model.w2v_path={w2v}", "dataset.batch_size=8",
                                                    *self.adapt_overrides()])
        labels = self.path("labels")
        ks = [k.strip() for k in self.args.ks.split(",")]
        self.timings["pseudo-labels"] = run_stage("pseudo_labels", [
            os.path.join(os.path.dirname(sys.executable), "fairseq-ser"), "pseudo-labels", "run",
            self.fold, labels, "--checkpoint", self.path("ptapt_stage1", "checkpoint_best.pt"),
            "--ks", *ks, "--no-progress",
        ], self.logs)
        self.train("ptapt", "ptapt", [f"model.w2v_path={w2v}", f"task.label_dir={labels}",
                                      "task.cluster_labels=[" + ",".join(f"km{k}" for k in ks) + "]",
                                      "dataset.max_tokens=400000", *self.adapt_overrides()])
        return self.path("ptapt", "checkpoint_last.pt")

    def vft(self, method, w2v):
        from .evaluate import evaluate

        name = f"vft_{method}"
        self.train(name, "vft", [
            f"model.w2v_path={w2v}", "common.log_interval=10", "dataset.batch_size=8",
            f"optimization.max_epoch={self.args.vft_epochs}", f"optimization.lr=[{self.args.vft_lr}]",
            # 64 of wav2vec2-base's 768 channels, scaled to the tiny model's 48
            "model.mask_channel_length=4",
        ])
        return evaluate(self.fold, self.path(name, "checkpoint_best.pt"), "test",
                        self.path(f"eval_{method}"), progress=False)


def results_table(results):
    lines = ["| method | UA | WA | macro-F1 |", "| --- | --- | --- | --- |"]
    for method, s in results.items():
        lines.append(f"| {METHOD_NAMES[method]} | {100 * s['ua']:.1f} | {100 * s['wa']:.1f} | "
                     f"{100 * s['macro_f1']:.1f} |")
    return "\n".join(lines)


METHOD_NAMES = {"vft": "V-FT", "tapt": "TAPT + V-FT", "ptapt": "P-TAPT + V-FT"}


def run(args):
    from .. import metrics
    from ..data.corpora.custom import prepare_folder
    from ..data.synthetic import generate_corpus
    from ..errors import DataError

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods:
        raise DataError(f"--methods {args.methods!r}: choose from {', '.join(METHOD_NAMES)}")
    demo = Demo(args)
    if not os.path.isfile(os.path.join(demo.config_dir, "vft.yaml")):
        raise DataError(f"{demo.config_dir}: no vft.yaml here; run the demo from the repository root "
                        "or pass --config-dir")
    t0 = time.time()
    print(f"== corpus: {args.speakers} synthetic speakers x 4 emotions x {args.per_class} utterances", flush=True)
    corpus = demo.path("corpus")
    generate_corpus(corpus, num_speakers=args.speakers, utterances_per_class=args.per_class, seed=0)
    result = prepare_folder(corpus, demo.path("manifests"), speaker_regex=r"^(spk\d+)_", folds=3)
    print("   fold1 (speaker-independent): " + ", ".join(
        f"{split} {sum(c.values())}" for split, c in result.counts["fold1"].items()), flush=True)
    demo.timings["corpus"] = time.time() - t0

    w2v = demo.pretrain()
    starts = {"vft": lambda: w2v, "tapt": lambda: demo.tapt(w2v), "ptapt": lambda: demo.ptapt(w2v)}
    results = {}
    for method in methods:
        results[method] = demo.vft(method, starts[method]())
        print(f"\n== {METHOD_NAMES[method]} on held-out speakers (fold1 test)\n")
        print(metrics.format_report(results[method]), flush=True)

    print("\n== results on held-out synthetic speakers (fold1 test, %)\n")
    print(results_table(results))
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in demo.timings.items())
          + f"; total {time.time() - t0:.0f} s")
    return 0

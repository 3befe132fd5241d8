"""End-to-end demo on the embedded synthetic corpus: V-FT, TAPT and P-TAPT cross-validated side by side.

Generates the corpus, prepares speaker-independent folds, pretrains a tiny
wav2vec 2.0 with fairseq's own audio_pretraining task on other synthetic
speakers (the stand-in for a released checkpoint), then runs `fairseq-ser cv`
with it: per fold, TAPT (continued contrastive pretraining) and P-TAPT (a
frame-level emotion model, k-means pseudo-labels of its features,
pseudo-label pretraining) once, then V-FT --runs times with different seeds
for every method, each run scored on the fold's held-out speakers. It prints
cv's table. Every stage runs the README's commands; logs and checkpoints go
under OUT (OUT/cv is cv's output folder). Run it from the repository root (it
reads config/).

V-FT trains the tiny model's CNN and projection too, at lr 2e-3, on random
1 s crops: its CNN is pretrained for minutes only, and frozen it leaves V-FT
near 40 % UA. After cv's table the demo says in words whether each method's
difference from V-FT exceeds 2 x the run-std. --low-resource runs cv
--label-fractions (--fractions) on the same corpus.

Sizing: 2 folds x 2 runs, 6 V-FT epochs, 80 updates of each adaptation
stage (TAPT and P-TAPT warm up for a fifth of them, then hold and decay, the
yaml's schedule in miniature), the 6 method x fold chains 2 at a time on one
core each (cv --jobs). 2 folds are the fewest that still cross-validate and
2 runs the fewest that give a spread over seeds. Measured on a quiet 2-core
machine: 490 s in all (pretraining 115 s, cv 366 s), V-FT 63.3 % UA, TAPT
64.7, P-TAPT 65.8. --low-resource from an empty folder: 698 s (cv 609 s),
UA at 25 / 50 / 100 % of the labels: V-FT 49.9 / 52.3 / 59.9, TAPT 45.8 /
55.7 / 63.3, P-TAPT 53.5 / 57.3 / 64.8. The numbers show the pipeline
working, not the paper's margins.
"""

import os
import shutil
import time

from .options import say


def add_arguments(parser):
    parser.add_argument("--out", default="demo_out", help="working folder (default: %(default)s)")
    parser.add_argument("--config-dir", default="config",
                        help="folder holding the stage yaml files (default: %(default)s)")
    parser.add_argument("--speakers", type=int, default=6, help="synthetic speakers (default: %(default)s)")
    parser.add_argument("--per-class", type=int, default=16,
                        help="utterances per speaker and class (default: %(default)s)")
    parser.add_argument("--methods", default="vft,tapt,ptapt",
                        help="comma-separated methods to run (default: %(default)s)")
    parser.add_argument("--num-folds", type=int, default=2, metavar="K",
                        help="number of speaker-independent folds (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=2,
                        help="V-FT runs per fold and method, with seeds 1, 2, ... (default: %(default)s)")
    parser.add_argument("--pretrain-updates", type=int, default=250,
                        help="updates of the tiny wav2vec 2.0 pretraining (default: %(default)s)")
    parser.add_argument("--adapt-updates", type=int, default=80,
                        help="updates of TAPT, of P-TAPT's frame emotion model and of P-TAPT "
                        "(default: %(default)s)")
    parser.add_argument("--ks", default="16,64,256",
                        help="k-means sizes of P-TAPT, scaled to the small corpus (the paper: "
                        "64,512,4096) (default: %(default)s)")
    parser.add_argument("--vft-epochs", type=int, default=6, help="V-FT epochs (default: %(default)s)")
    parser.add_argument("--vft-lr", type=float, default=2e-3,
                        help="V-FT learning rate; higher than the paper's 1e-4 because the "
                        "tiny model trains for minutes, not hours (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, metavar="N",
                        help="method x fold chains trained side by side, each on 1/N of the CPU cores "
                        "(cv --jobs; default: %(default)s)")
    parser.add_argument("--vft-crop", type=int, default=16000, metavar="SAMPLES",
                        help="V-FT trains on random crops of at most this many samples (task.max_sample_size; "
                        "test utterances are scored whole; default: %(default)s = 1 s)")
    parser.add_argument("--low-resource", action="store_true",
                        help="run the low-resource curve instead of the plain table: every method at each "
                        "of --fractions of the labelled training data (`cv --label-fractions`), into "
                        "OUT/cv_low_resource, reusing a plain demo's corpus and pretraining in OUT (measured "
                        "from an empty OUT: 12 minutes on 2 cores, twice the plain demo on the same machine)")
    parser.add_argument("--fractions", default="0.25,0.5,1", metavar="F,F,...",
                        help="labelled fractions of --low-resource (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the demo in OUT where it stopped (default: start afresh, "
                        "removing an earlier demo's OUT)")


CPU = ["common.cpu=true", "common.fp16=false", "dataset.num_workers=0"]


def demo_overrides(args):
    """The README's stage settings scaled to a CPU and minutes, as cv overrides."""
    n = args.adapt_updates
    adapt = [f"optimization.max_update={n}", "common.log_interval=25", f"checkpoint.save_interval_updates={n}",
             f"dataset.validate_interval_updates={n}"]
    # the schedule's shape in miniature: a fifth of the updates to warm up (the yaml: 100 of 20000)
    schedule = [f"lr_scheduler.warmup_updates={max(1, n // 5)}"]
    scoped = {
        "tapt": ["dataset.batch_size=8", "dataset.max_tokens=400000", "optimization.update_freq=[1]",
                 "task.min_sample_size=8000", *adapt, *schedule],
        "ptapt_stage1": ["dataset.batch_size=8", *adapt],
        "ptapt": ["dataset.max_tokens=400000", *adapt, *schedule],
        # 64 of wav2vec2-base's 768 channels is 4 of the tiny model's 48
        "vft": ["common.log_interval=10", "dataset.batch_size=8", f"optimization.max_epoch={args.vft_epochs}",
                f"optimization.lr=[{args.vft_lr}]", f"task.max_sample_size={args.vft_crop}",
                "model.mask_channel_length=4",
                "model.freeze_feature_encoder=false", "model.freeze_feature_projection=false"],
    }
    return CPU + [f"{stage}:{o}" for stage, items in scoped.items() for o in items]


def fresh_start(out):
    """Remove an earlier demo's folder; refuse to touch a folder that is not one."""
    from ..errors import DataError

    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not os.path.isfile(os.path.join(out, "corpus", "synthetic.json")):
        raise DataError(f"{out}: exists and is not a demo folder; pass another --out")
    say(f"== removing the earlier demo in {out} (--resume continues it instead)")
    shutil.rmtree(out)


def pretraining_manifest(out, speakers):
    """Other synthetic speakers (seed 1) than the corpus's: the audio the tiny model pretrains on."""
    import soundfile as sf

    from ..data.manifest import write_manifest
    from ..data.synthetic import generate_corpus

    corpus = os.path.join(out, "pretrain_corpus")
    rows = generate_corpus(corpus, num_speakers=speakers, utterances_per_class=16, seed=1, progress=False)
    data = os.path.join(corpus, "manifest")
    write_manifest(os.path.join(data, "train.tsv"), corpus,
                   [(r["file"], sf.info(os.path.join(corpus, r["file"])).frames) for r in rows])
    return data


def pretrain(args, out, config_dir):
    from ..experiments.stages import Stage, console_command, execute

    data = pretraining_manifest(out, 4)
    directory = os.path.join(out, "pretrain")
    argv = [*console_command("fairseq-hydra-train", "fairseq_cli.hydra_train"), "--config-dir", config_dir,
            "--config-name", "pretrain_tiny", f"task.data={data}", f"checkpoint.save_dir={directory}", *CPU,
            f"optimization.max_update={args.pretrain_updates}"]
    execute(Stage("pretrain", "tiny wav2vec 2.0 pretraining (the stand-in for wav2vec_small.pt)", directory,
                  argv, {"updates": args.pretrain_updates}, outputs=["checkpoint_last.pt"]), report=say)
    return os.path.join(directory, "checkpoint_last.pt")


def _fractions(text):
    from ..errors import SerError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SerError(f"--fractions: expected comma-separated fractions such as 0.25,0.5,1, got {text!r}")


def run(args):
    from ..data.corpora.custom import prepare_folder
    from ..data.synthetic import generate_corpus
    from ..errors import DataError
    from ..experiments.cv import CrossValidation
    from ..experiments.overrides import Overrides
    from ..experiments.report import verdict_lines
    from ..experiments.stages import parse_methods

    from .cv import split_ks

    methods = parse_methods(args.methods)
    ks, _ = split_ks([args.ks])
    out = os.path.abspath(args.out)
    config_dir = os.path.abspath(args.config_dir)
    if not os.path.isfile(os.path.join(config_dir, "vft.yaml")):
        raise DataError(f"{config_dir}: no vft.yaml here; run the demo from the repository root "
                        "or pass --config-dir")
    if not args.resume and not args.low_resource:   # the curve reuses a plain demo's corpus and pretraining
        fresh_start(out)
    t0 = time.time()
    say(f"== corpus: {args.speakers} synthetic speakers x 4 emotions x {args.per_class} utterances, "
        f"{args.num_folds} speaker-independent folds")
    corpus = os.path.join(out, "corpus")
    generate_corpus(corpus, num_speakers=args.speakers, utterances_per_class=args.per_class, seed=0,
                    progress=False)
    result = prepare_folder(corpus, os.path.join(out, "manifests"), speaker_regex=r"^(spk\d+)_",
                            folds=args.num_folds, progress=False)
    for fold, counts in result.counts.items():
        say(f"   {fold}: " + ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items()))
    timings = {"corpus": time.time() - t0}

    t = time.time()
    w2v = pretrain(args, out, config_dir)
    timings["pretraining"] = time.time() - t

    t = time.time()
    # scored on the CPU, where the demo trains (CPU's common.cpu=true)
    fractions = _fractions(args.fractions) if args.low_resource else None
    results = CrossValidation(folds_root=os.path.join(out, "manifests"), w2v_path=w2v,
                              out_dir=os.path.join(out, "cv_low_resource" if fractions else "cv"), methods=methods,
                              runs=args.runs, overrides=Overrides.parse(demo_overrides(args)), ks=ks,
                              config_dir=config_dir, progress=False, device="cpu", report=say,
                              label_fractions=fractions, jobs=args.jobs).run()
    timings["cv"] = time.time() - t
    if fractions:   # a verdict per fraction
        verdict = []
        for name, fraction in results["subsets"].items():
            lines = verdict_lines(results["by_fraction"][name])
            verdict += [f"{100 * fraction:g} % of the labels:"] + ["  " + line for line in lines] if lines else []
    else:
        verdict = verdict_lines(results)
    if verdict:
        print("\n" + "\n".join(verdict))
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {time.time() - t0:.0f} s")
    return 0

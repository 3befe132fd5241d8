"""Cross-validation of V-FT, TAPT and P-TAPT over every fold of a manifest root.

``fairseq-ser cv --methods vft,tapt,ptapt --manifests manifests/iemocap --checkpoint wav2vec_small.pt
--runs 5 --out cv/iemocap [overrides...]``: per fold, TAPT or P-TAPT's
adaptation once on the fold's training audio, then V-FT --runs times with
seeds --seed, --seed + 1, ...; each run's best checkpoint is scored on the
fold's test split. Writes OUT/results.md and OUT/results.json (per fold mean ±
std over runs and the average, for UA, WA and macro-F1; a row per method),
OUT/<method>/confusion_matrix.{txt,png} (summed over folds and runs), and every
run's checkpoint, log and predictions under OUT/<method>/<fold>/run<r>/.
Rerunning the same command skips what is done and redoes what an
interruption left unfinished.

Low-resource experiments: --label-fractions 0.1,0.25,0.5,1 runs every method
on nested labelled subsets of each fold (TAPT once per fold, P-TAPT stage 1 and
after it and every V-FT run once per fold and fraction) and writes a table per
metric (a column per fraction) and OUT/low_resource.png (UA against the
fraction). --unlabelled PATH adds audio that only the label-free stages see.

Cross-corpus: --also-test NAME=FOLDS_DIR also scores every run on all of
another corpus (shared classes only) and adds a train x test corpus table.

Overrides: KEY=VALUE goes to every fairseq-hydra-train stage (e.g.
optimization.max_update=2000 distributed_training.distributed_world_size=8);
STAGE:KEY=VALUE to one stage only, STAGE being vft, tapt, ptapt_stage1 or ptapt
(e.g. vft:model.pooling=attentive_stats).
"""

from .options import add_device_argument, say, torch_device


def add_arguments(parser):
    parser.add_argument("--methods", default="vft",
                        help="vft, tapt or ptapt; comma-separated to run several side by side "
                        "(default: %(default)s)")
    parser.add_argument("--manifests", required=True, metavar="DIR",
                        help="folder of fold folders (fold1, fold2, ...) each with {train,valid,test}.tsv, "
                        ".emo and dict.emo.txt, as `fairseq-ser prepare` writes; or a single fold folder")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="the pretrained wav2vec 2.0 checkpoint every method starts from (e.g. "
                        "wav2vec_small.pt; each stage's model.w2v_path), not a fine-tuned classifier")
    parser.add_argument("--runs", type=int, default=5,
                        help="fine-tuning runs per fold, each with its own seed (default: %(default)s, "
                        "as the paper)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (rerun with the same DIR to resume)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the adaptation stages and of run 1; run r uses seed + r - 1 "
                        "(default: %(default)s)")
    parser.add_argument("--ks", nargs="+", default=["64", "512", "4096"], metavar="K",
                        help="P-TAPT's k-means cluster sizes, space- or comma-separated (default: 64 512 "
                        "4096, the paper's)")
    parser.add_argument("--stage1-checkpoint", metavar="CKPT",
                        help="pretrained checkpoint P-TAPT's frame emotion model starts from (the paper: "
                        "fairseq's wav2vec 1.0 wav2vec_large.pt; default: --checkpoint)")
    parser.add_argument("--config-dir", default="config",
                        help="folder of the stage yaml files (default: %(default)s, i.e. run from the "
                        "repository root)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N method x fold chains side by side (each: the method's adaptation, then its "
                        "V-FT runs); on the CPU each training command gets 1/N of the cores (OMP_NUM_THREADS), "
                        "which trains small models faster than one command on all of them; on a GPU the "
                        "commands share it (default: %(default)s, one after another)")
    parser.add_argument("--keep-last", action="store_true",
                        help="keep every checkpoint: each run's checkpoint_last.pt, the adaptation stages' "
                        "other checkpoints and P-TAPT's dumped frame features (default: keep only the "
                        "checkpoints later steps use and each run's checkpoint_best.pt)")
    parser.add_argument("--label-fractions", type=_fractions, metavar="F,F,...",
                        help="the low-resource curve: run every method at each fraction of the labelled "
                        "training data, e.g. 0.1,0.25,0.5,1 (nested subsets of every fold, stratified by "
                        "class and speaker; the label-free stages still see all the training audio; "
                        "default: all the labels only)")
    parser.add_argument("--unlabelled", action="append", default=[], metavar="PATH",
                        help="extra unlabelled audio, repeatable (a folder searched for audio files, or a .tsv "
                        "manifest), "
                        "converted and checked like `prepare`'s: TAPT, P-TAPT's k-means and pseudo-labels "
                        "and P-TAPT pretraining train on it besides the training audio; V-FT and P-TAPT "
                        "stage 1 do not (files that are a fold's valid or test utterances are left out)")
    parser.add_argument("--also-test", action="append", default=[], metavar="NAME=FOLDS_DIR",
                        help="repeatable: also score every run's checkpoint on all of another corpus (the union "
                        "of the test splits of its fold folders, as `prepare` writes them), on the classes it "
                        "shares with the model only; adds a train corpus x test corpus table to results.md "
                        "and results.json (e.g. emodb=manifests/emodb)")
    add_device_argument(parser, "each run's best checkpoint is scored",
                        "; training follows fairseq's common.cpu (pass common.cpu=true to train on the CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while evaluating")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides: KEY=VALUE for every training stage, STAGE:KEY=VALUE for one "
                        "(STAGE: vft, tapt, ptapt_stage1, ptapt)")


def _fractions(text):
    import argparse

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1], e.g. 0.1,0.25,0.5,1; "
                                         f"got {text!r}")
    return values


def split_ks(items):
    """Cluster sizes from --ks, and the overrides argparse took for more of them (it reads greedily)."""
    from ..errors import SerError

    ks, overrides = [], []
    for item in items:
        if "=" in item:
            overrides.append(item)
            continue
        for part in filter(None, item.split(",")):
            if not part.isdigit():
                raise SerError(f"--ks: {part!r} is not a number of clusters")
            ks.append(int(part))
    return ks, overrides


def run(args):
    from ..experiments.cv import CrossValidation
    from ..experiments.overrides import Overrides
    from ..experiments.stages import parse_methods

    ks, more = split_ks(args.ks)
    CrossValidation(
        folds_root=args.manifests, w2v_path=args.checkpoint, stage1_w2v_path=args.stage1_checkpoint,
        out_dir=args.out, methods=parse_methods(args.methods), runs=args.runs,
        overrides=Overrides.parse(args.overrides + more), ks=ks, seed=args.seed,
        config_dir=args.config_dir, keep_last=args.keep_last,
        progress=not args.no_progress, device=torch_device(args.device), report=say,
        label_fractions=args.label_fractions, unlabelled=args.unlabelled, also_test=args.also_test,
        jobs=args.jobs,
    ).run()
    return 0

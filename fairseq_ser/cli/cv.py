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
    parser.add_argument("--keep-last", action="store_true",
                        help="keep every checkpoint: each run's checkpoint_last.pt, the adaptation stages' "
                        "other checkpoints and P-TAPT's dumped frame features (default: keep only the "
                        "checkpoints later steps use and each run's checkpoint_best.pt)")
    add_device_argument(parser, "each run's best checkpoint is scored",
                        "; training follows fairseq's common.cpu (pass common.cpu=true to train on the CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while evaluating")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides: KEY=VALUE for every training stage, STAGE:KEY=VALUE for one "
                        "(STAGE: vft, tapt, ptapt_stage1, ptapt)")


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
    ).run()
    return 0

"""Write nested, class- and speaker-stratified labelled subsets of every fold (low-resource experiments).

For each fold folder of FOLDS_DIR and each value, OUT_DIR/<subset>/<fold>/ is a
fold folder whose training split is the labelled subset (frac0.1 holds 10 % of
each class, rounded; per_class20 holds 20 of each class), nested for one seed
(frac0.1 inside frac0.25 inside ...). Valid and test are the source's,
unchanged. Each subset fold's unlabelled.tsv lists the fold's full training
audio, plus the extra unlabelled audio of --unlabelled (converted and checked
like prepare's audio into OUT_DIR/unlabelled/), never a valid or test file:
the label-free stages (TAPT, P-TAPT's pseudo-labels and pretraining) train on
it, V-FT and P-TAPT stage 1 on the labelled subset only. OUT_DIR/subsets.json
records the counts. See manifests/README.md for the formats.
"""

import argparse
import os

from ..data.audio_cache import DEFAULT_MIN_SECONDS
from ..frames import RECEPTIVE_FIELD
from .prepare import _positive_int


def add_arguments(parser):
    parser.add_argument("folds_dir", metavar="FOLDS_DIR",
                        help="folder of fold folders (fold1, fold2, ...) as `fairseq-ser prepare` writes them")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the subset folders (frac0.1/fold1, ...) go")
    values = parser.add_mutually_exclusive_group(required=True)
    values.add_argument("--fractions", type=_fraction, nargs="+", metavar="F",
                        help="fractions of each class's training utterances, in (0, 1], e.g. 0.1 0.25 0.5 1")
    values.add_argument("--per-class", type=_positive_int, nargs="+", metavar="N",
                        help="training utterances per class, e.g. 20 50")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the choice; subsets of one seed are nested (default: %(default)s)")
    audio = parser.add_argument_group("extra unlabelled audio")
    audio.add_argument("--unlabelled", nargs="+", default=[], metavar="PATH",
                       help="folders (searched recursively) or .tsv manifests of extra audio for the "
                       "label-free stages; converted into OUT_DIR/unlabelled/")
    audio.add_argument("--cache-dir", metavar="DIR",
                       help="where converted extra audio goes (default: OUT_DIR/unlabelled/audio_cache)")
    audio.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS, metavar="S",
                       help="exclude extra files shorter than this (default: %(default)s s; never "
                       f"below the model's {RECEPTIVE_FIELD}-sample receptive field)")
    audio.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="threads inspecting and converting extra audio (default: up to 8)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def run(args):
    from ..data.audio_cache import AudioCheck
    from ..data.manifest import read_manifest
    from ..data.subsets import write_subsets
    from ..data.unlabelled import prepare_unlabelled

    progress = not args.no_progress
    extra = []
    if args.unlabelled:
        where = os.path.join(args.out_dir, "unlabelled")
        manifest = prepare_unlabelled(args.unlabelled, where, cache_dir=args.cache_dir,
                                      check=AudioCheck.from_seconds(args.min_seconds), jobs=args.jobs,
                                      progress=progress)
        print(f"extra unlabelled audio: {len(read_manifest(manifest))} file(s) in {manifest} "
              f"(excluded files: {os.path.join(where, 'excluded.tsv')})")
        extra.append(manifest)
    result = write_subsets(args.folds_dir, args.out_dir, fractions=args.fractions, per_class=args.per_class,
                           seed=args.seed, unlabelled=extra, progress=progress)
    print(result.format_summary())
    return 0

"""Score a trained emotion classifier on one split of a manifest folder.

fairseq-generate style: ``fairseq-ser evaluate DATA_DIR --checkpoint CKPT --gen-subset test``.
Writes, under the results folder, predictions.tsv (one line per utterance:
id, reference, prediction, probability of every class), metrics.json (UA,
WA, macro/micro-F1, per-class scores, confusion matrix) and
confusion_matrix.png, and prints the metrics as a table.

Classes are matched by name; the command prints which are shared, which only
in the model and which only in the data. ``--classes shared`` scores another
corpus by the cross-corpus protocol: only utterances of the shared classes,
argmax over the shared classes.
"""

from .options import add_device_argument, torch_device


def add_arguments(parser):
    parser.add_argument("data", metavar="DATA_DIR",
                        help="folder with {subset}.tsv, {subset}.{labels} and dict.{labels}.txt")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="fine-tuned classifier checkpoint (e.g. checkpoints/vft/checkpoint_best.pt)")
    parser.add_argument("--gen-subset", default="test", metavar="SPLIT",
                        help="split to score (default: %(default)s)")
    parser.add_argument("--results-path", metavar="DIR",
                        help="where to write predictions.tsv, metrics.json and confusion_matrix.png "
                        "(default: <checkpoint folder>/eval-<subset>)")
    parser.add_argument("--labels", default="emo", metavar="EXT",
                        help="label file extension (default: %(default)s)")
    parser.add_argument("--batch-seconds", type=float, default=160.0,
                        help="padded audio per batch in seconds (default: %(default)s)")
    # evaluation.CLASS_PROTOCOLS, spelled out: importing evaluation loads torch, and --help must not
    parser.add_argument("--classes", choices=("all", "shared"), default="all",
                        help="all: argmax over every class of the model; an utterance whose label the model "
                        "does not know is an error. shared: the cross-corpus protocol: score only utterances "
                        "of the classes the model and the data share, argmax over those classes "
                        "(default: %(default)s)")
    add_device_argument(parser, "the classifier runs")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args):
    from .. import metrics
    from ..evaluation import describe_classes, evaluate

    summary = evaluate(args.data, args.checkpoint, args.gen_subset, args.results_path, args.labels,
                       args.batch_seconds, device=torch_device(args.device), progress=not args.no_progress,
                       classes=args.classes)
    print(describe_classes(summary) + "\n")
    print(metrics.format_report(summary))
    print(f"\nwrote predictions.tsv, metrics.json, confusion_matrix.png to {summary['results_path']}")
    return 0

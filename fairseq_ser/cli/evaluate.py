"""Score a trained emotion classifier on one split of a manifest folder.

fairseq-generate style: ``fairseq-ser evaluate DATA_DIR --checkpoint CKPT --gen-subset test``.
Writes, under the results folder, predictions.tsv (one line per utterance:
id, reference, prediction, probability of every class), metrics.json (UA,
WA, macro/micro-F1, per-class scores, confusion matrix) and
confusion_matrix.png, and prints the metrics as a table.
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
    add_device_argument(parser, "the classifier runs")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args):
    from .. import metrics
    from ..evaluation import evaluate

    summary = evaluate(args.data, args.checkpoint, args.gen_subset, args.results_path, args.labels,
                       args.batch_seconds, device=torch_device(args.device), progress=not args.no_progress)
    print(metrics.format_report(summary))
    print(f"\nwrote predictions.tsv, metrics.json, confusion_matrix.png to {summary['results_path']}")
    return 0

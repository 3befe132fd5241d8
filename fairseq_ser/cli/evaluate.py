"""Score a trained emotion classifier on one split of a manifest folder.

fairseq-generate style: ``fairseq-ser evaluate DATA_DIR --path CKPT --gen-subset test``.
Writes, under the results folder, predictions.tsv (one line per utterance:
id, reference, prediction, probability of every class), metrics.json (UA,
WA, macro/micro-F1, per-class scores, confusion matrix) and
confusion_matrix.png, and prints the metrics as a table.
"""

import json
import os


def add_arguments(parser):
    parser.add_argument("data", metavar="DATA_DIR",
                        help="folder with {subset}.tsv, {subset}.{labels} and dict.{labels}.txt")
    parser.add_argument("--path", required=True, metavar="CKPT",
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
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")


def evaluate(data_dir, checkpoint, subset="test", results_path=None, labels_ext="emo",
             batch_seconds=160.0, device=None, progress=True):
    """Score ``checkpoint`` on ``subset`` of ``data_dir``; write results; return the metrics summary."""
    from tqdm import tqdm

    from .. import metrics
    from ..data.audio import read_audio
    from ..data.manifest import encode_labels, label_path, load_split
    from ..fileio import atomic_open
    from ..inference import EmotionClassifier
    from ..plots import save_confusion_matrix

    clf = EmotionClassifier.from_checkpoint(checkpoint, device=device)
    split = load_split(data_dir, subset, labels_ext)
    # the data's dictionary may order (or even name a subset of) the classes differently
    refs = encode_labels(split.labels, clf.class_names, label_path(data_dir, subset, labels_ext))
    manifest = split.manifest

    class Audio:
        def __len__(self):
            return len(manifest)

        def __getitem__(self, i):
            return read_audio(manifest.audio_path(i))

    with tqdm(total=len(manifest), desc=f"evaluate {subset}", unit="utt", disable=not progress) as bar:
        probs = clf.predict_proba(Audio(), lengths=[n for _, n in manifest.entries],
                                  max_batch_samples=int(batch_seconds * 16000), progress=bar.update)
    preds = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(refs, preds, len(clf.class_names))
    summary = metrics.summarize(cm, clf.class_names)
    summary.update({"checkpoint": os.path.abspath(checkpoint), "data": os.path.abspath(data_dir),
                    "subset": subset})

    results_path = results_path or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"eval-{subset}")
    os.makedirs(results_path, exist_ok=True)
    with atomic_open(os.path.join(results_path, "predictions.tsv"), "w", encoding="utf-8") as f:
        f.write("\t".join(["id", "path", "reference", "prediction"] + [f"p_{n}" for n in clf.class_names]) + "\n")
        for i, (relpath, _) in enumerate(manifest.entries):
            row = [manifest.utterance_id(i), relpath, clf.class_names[refs[i]], clf.class_names[preds[i]]]
            f.write("\t".join(row + [f"{p:.6f}" for p in probs[i]]) + "\n")
    with atomic_open(os.path.join(results_path, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    save_confusion_matrix(cm, clf.class_names, os.path.join(results_path, "confusion_matrix.png"),
                          title=f"{subset}: UA {100 * summary['ua']:.1f}  WA {100 * summary['wa']:.1f}")
    summary["results_path"] = results_path
    return summary


def run(args):
    from .. import metrics

    summary = evaluate(args.data, args.path, args.gen_subset, args.results_path, args.labels,
                       args.batch_seconds, device="cpu" if args.cpu else None)
    print(metrics.format_report(summary))
    print(f"\nwrote predictions.tsv, metrics.json, confusion_matrix.png to {summary['results_path']}")
    return 0

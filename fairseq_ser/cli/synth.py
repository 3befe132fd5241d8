"""Generate the embedded synthetic emotional-speech corpus.

Writes OUT_DIR/<label>/<speaker>_<label>_<NNN>.wav (16 kHz mono 16-bit),
OUT_DIR/metadata.tsv and OUT_DIR/synthetic.json. The same arguments and seed
give byte-identical files; rerunning into a folder that already holds the
same corpus does nothing. Labels are the folder names and speakers the
file-name prefix: `fairseq-ser prepare folder OUT_DIR --speaker-regex '^(spk\\d+)_'`.
"""

# Spelled out rather than imported so that `fairseq-ser --help` does not load
# numpy; the library validates the names (tests check that these match it).
DEFAULT_CLASSES = "neu,hap,ang,sad"
KNOWN_CLASSES = "neu,hap,ang,sad,fea,bor,dis"


def _class_list(text):
    return [c.strip() for c in text.split(",") if c.strip()]


def add_arguments(parser):
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="folder to write the corpus into (created if missing)")
    parser.add_argument("--speakers", type=int, default=6, metavar="N",
                        help="number of synthetic speakers, alternately male and female "
                        "(at least 2; default %(default)s)")
    parser.add_argument("--per-class", type=int, default=12, metavar="N",
                        help="utterances per speaker and emotion class (default %(default)s)")
    parser.add_argument("--classes", type=_class_list, default=_class_list(DEFAULT_CLASSES), metavar="LIST",
                        help=f"comma-separated emotion classes, 2 to 7 of {KNOWN_CLASSES}; the order "
                        f"is kept (default {DEFAULT_CLASSES})")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; same seed, same files (default %(default)s)")
    parser.add_argument("--min-seconds", type=float, default=1.0, metavar="S",
                        help="shortest utterance in seconds, at least 0.5 (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=3.0, metavar="S",
                        help="longest utterance in seconds (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args):
    from collections import Counter

    from ..data.synthetic import generate_corpus

    rows = generate_corpus(args.out_dir, num_speakers=args.speakers, utterances_per_class=args.per_class,
                           classes=args.classes, seed=args.seed, min_seconds=args.min_seconds,
                           max_seconds=args.max_seconds, progress=not args.no_progress)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    speakers = list(dict.fromkeys(r["speaker"] for r in rows))
    per_label, per_speaker = Counter(r["label"] for r in rows), Counter(r["speaker"] for r in rows)
    minutes = sum(r["seconds"] for r in rows) / 60
    print(f"{args.out_dir}: {len(rows)} utterances, {minutes:.1f} min, "
          f"{len(speakers)} speakers, {len(labels)} classes")
    print("  per class:   " + ", ".join(f"{label} {per_label[label]}" for label in labels))
    print("  per speaker: " + ", ".join(f"{spk} {per_speaker[spk]}" for spk in speakers))
    return 0

"""Write cross-validation folds of fairseq manifests, labels and label dictionaries.

Each fold folder holds {train,valid,test}.tsv, the line-aligned
{train,valid,test}.emo and dict.emo.txt; OUT_DIR/excluded.tsv lists the audio
files left out and why. Audio that is not 16 kHz mono 16-bit WAV is converted
once into a cache folder. See manifests/README.md for the formats.
"""

import argparse
import os

from ..data.audio_cache import DEFAULT_MIN_SECONDS
from ..frames import RECEPTIVE_FIELD

CORPORA = ("iemocap", "emodb", "ravdess", "cremad", "msp-podcast", "esd", "savee", "folder", "json")


def add_arguments(parser):
    common = argparse.ArgumentParser(add_help=False)
    audio = common.add_argument_group("audio")
    audio.add_argument("--cache-dir", metavar="DIR",
                       help="where converted audio goes (default: OUT_DIR/audio_cache); "
                       "reruns reuse what is there")
    audio.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS, metavar="S",
                       help="exclude files shorter than this (default: %(default)s s; never "
                       f"below the model's {RECEPTIVE_FIELD}-sample receptive field)")
    audio.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="threads inspecting and converting audio (default: up to 8)")
    audio.add_argument("--no-progress", action="store_true",
                       help="do not show the progress bar")
    labels = common.add_argument_group("labels and splits")
    labels.add_argument("--label-map", metavar="SRC:DST,...",
                        help="keep and rename source labels, e.g. 'neu:neu,hap:hap,exc:hap'; "
                        "several sources may share a target (a merge), labels not listed are "
                        "dropped; targets' order is the class order")
    labels.add_argument("--valid-fraction", type=float, default=0.1, metavar="F",
                        help="share of each class of the training utterances held out for "
                        "validation (default: %(default)s)")
    labels.add_argument("--seed", type=int, default=1,
                        help="seed of the random validation and fold assignment (default: %(default)s)")
    speaker_valid = argparse.ArgumentParser(add_help=False)
    speaker_valid.add_argument(
        "--valid", choices=("stratified", "speaker"), default="stratified",
        help="validation split from the training data: a stratified --valid-fraction of "
        "utterances, or all utterances of one held-out training speaker (default: %(default)s)")

    sub = parser.add_subparsers(dest="corpus", metavar="CORPUS")
    sub.required = True

    p = sub.add_parser("iemocap", parents=[common, speaker_valid],
                       help="IEMOCAP, 5 leave-one-session-out folds",
                       description="IEMOCAP, 5 leave-one-session-out folds: fold k tests on "
                       "session k. With --valid speaker, fold k validates on the speaker of "
                       "session (k mod 5) + 1 whose sex alternates with k (Ses02F, Ses03M, Ses04F, "
                       "Ses05M, Ses01F).")
    p.add_argument("corpus_dir", metavar="IEMOCAP_DIR",
                   help="the corpus folder holding Session1..Session5")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "iemocap"),
                   help="where fold1..fold5 are written (default: %(default)s)")
    p.add_argument("--classes", choices=("4", "5", "6"), default=None,
                   help="label preset: 4 = neu, hap (with exc), ang, sad (the default); "
                   "5 = those plus fru; 6 = neu, hap, ang, sad, exc, fru. --label-map overrides it")
    p.add_argument("--subset", choices=("all", "improvised", "scripted"), default="all",
                   help="only dialogs whose name contains 'impro' or 'script' (default: %(default)s)")

    p = sub.add_parser("emodb", parents=[common, speaker_valid],
                       help="EmoDB, speaker-independent folds",
                       description="EmoDB (file names SSTTTEV.wav), 7 classes ang bor neu hap "
                       "fea sad dis, leave-one-speaker-out by default. With --valid speaker, "
                       "a fold validates on the speaker following its last test speaker in "
                       "sorted order.")
    p.add_argument("corpus_dir", metavar="EMODB_DIR", help="the corpus folder (holding wav/) or wav/ itself")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "emodb"),
                   help="where the fold folders are written (default: %(default)s)")
    p.add_argument("--num-folds", type=_positive_int, default=None, metavar="K",
                   help="K folds of speaker groups balanced by utterance count "
                   "(default: one fold per speaker)")

    p = sub.add_parser("ravdess", parents=[common, speaker_valid],
                       help="RAVDESS speech, EmoBox's 6 folds of 4 actors",
                       description="RAVDESS, audio-only speech (Actor_NN/03-01-EE-II-SS-RR-AA.wav, "
                       "48 kHz: converted). Song, video-modality and misnamed files are excluded. "
                       "Default: 8 classes in EmoBox's 6 actor-independent folds.")
    p.add_argument("corpus_dir", metavar="RAVDESS_DIR",
                   help="the folder holding Actor_01 .. Actor_24 (Audio_Speech_Actors_01-24)")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "ravdess"),
                   help="where the fold folders are written (default: %(default)s)")
    p.add_argument("--classes", choices=("8", "4"), default="8",
                   help="8 = neu cal hap sad ang fea dis sur (the default); 4 = neu hap ang sad, "
                   "calm dropped. --label-map overrides it")
    p.add_argument("--calm", choices=("keep", "merge", "drop"), default=None,
                   help="calm as its own class (keep), merged into neutral (merge), or left out "
                   "(drop) (default: as --classes says)")
    p.add_argument("--intensity", choices=("all", "normal", "strong"), default="all",
                   help="keep utterances of this emotional intensity only; neutral has normal "
                   "only (default: %(default)s)")
    p.add_argument("--protocol", choices=("emobox", "loso"), default="emobox",
                   help="emobox = EmoBox's 6 folds of 4 actors; loso = leave one actor out, 24 "
                   "folds (default: %(default)s)")
    p.add_argument("--num-folds", type=_positive_int, default=None, metavar="K",
                   help="K actor groups balanced by utterance count, instead of --protocol")

    p = sub.add_parser("cremad", parents=[common, speaker_valid],
                       help="CREMA-D, speaker-independent folds",
                       description="CREMA-D (AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav), 6 "
                       "classes ang dis fea hap neu sad, 5 speaker-independent folds by default.")
    p.add_argument("corpus_dir", metavar="CREMAD_DIR",
                   help="the CREMA-D clone (holding AudioWAV/ and processedResults/) or AudioWAV itself")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "cremad"),
                   help="where the fold folders are written (default: %(default)s)")
    p.add_argument("--classes", choices=("6", "4"), default="6",
                   help="6 = ang dis fea hap neu sad (the default); 4 = neu hap ang sad. "
                   "--label-map overrides it")
    p.add_argument("--labels", choices=("acted", "voted"), default="acted",
                   help="acted = the emotion in the file name; voted = VoiceVote of "
                   "processedResults/summaryTable.csv, what raters heard (ties excluded) "
                   "(default: %(default)s)")
    p.add_argument("--num-folds", type=_positive_int, default=5, metavar="K",
                   help="K actor groups balanced by utterance count (default: %(default)s)")

    p = sub.add_parser("msp-podcast", parents=[common],
                       help="MSP-Podcast, its official partitions in one fold",
                       description="MSP-Podcast (Audios/*.wav, Labels/labels_consensus.csv or .json): "
                       "Train, Development and Test1 (and Test2 as test2) in the fold folder "
                       "'official'; Test3 (hidden labels) is left out. Development is the "
                       "validation split, so --valid-fraction and --seed do not apply.")
    p.add_argument("corpus_dir", metavar="MSP_DIR", help="the release folder holding Audios/ and Labels/")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "msp-podcast"),
                   help="where the fold folder 'official' is written (default: %(default)s)")
    p.add_argument("--classes", choices=("8", "4"), default="8",
                   help="8 = the challenge's ang sad hap sur fea dis con neu (O and X dropped, the "
                   "default); 4 = neu hap ang sad. --label-map overrides it (sources: those "
                   "names plus oth and xxx)")

    p = sub.add_parser("esd", parents=[common, speaker_valid],
                       help="ESD, its official split or speaker-independent folds",
                       description="ESD (<speaker>/<Emotion>/<speaker>_<number>.wav, speakers 0001-0010 "
                       "Mandarin, 0011-0020 English): the official train/evaluation/test split when the "
                       "emotion folders hold it, else speaker-independent folds.")
    p.add_argument("corpus_dir", metavar="ESD_DIR",
                   help="the folder holding the speaker folders 0001 .. 0020 (Emotion Speech Dataset)")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "esd"),
                   help="where the fold folders are written (default: %(default)s)")
    p.add_argument("--classes", choices=("5", "4"), default="5",
                   help="5 = neu ang hap sad sur (the default); 4 = neu hap ang sad. --label-map overrides it")
    p.add_argument("--language", choices=("all", "mandarin", "english"), default="all",
                   help="speakers 0001-0010 (mandarin), 0011-0020 (english) or all (default: %(default)s)")
    p.add_argument("--speakers", type=_comma_list, metavar="LIST",
                   help="only these speakers, e.g. 0011,0012,0013")
    p.add_argument("--protocol", choices=("auto", "official", "speakers"), default="auto",
                   help="official = the corpus's train/evaluation/test split (same speakers in "
                   "every split); speakers = --num-folds speaker-independent folds; auto = "
                   "official when the tree has it (default: %(default)s)")
    p.add_argument("--num-folds", type=_positive_int, default=5, metavar="K",
                   help="speaker groups of the speakers protocol (default: %(default)s)")

    p = sub.add_parser("savee", parents=[common, speaker_valid],
                       help="SAVEE, 4 leave-one-speaker-out folds",
                       description="SAVEE (AudioData/<DC|JE|JK|KL>/<code><nn>.wav or "
                       "<speaker>_<code><nn>.wav, 44.1 kHz: converted), 7 classes, leave one "
                       "speaker out.")
    p.add_argument("corpus_dir", metavar="SAVEE_DIR",
                   help="the SAVEE folder (holding AudioData/), AudioData itself, or a flat folder "
                   "of DC_a01.wav-style files")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=os.path.join("manifests", "savee"),
                   help="where fold1..fold4 are written (default: %(default)s)")
    p.add_argument("--classes", choices=("7", "4"), default="7",
                   help="7 = ang dis fea hap neu sad sur (the default); 4 = neu hap ang sad. "
                   "--label-map overrides it")

    p = sub.add_parser("folder", parents=[common, speaker_valid],
                       help="your own audio files, labelled by folder or file name",
                       description="Audio files found recursively under AUDIO_DIR. Regular "
                       "expressions are searched in the file name.")
    p.add_argument("corpus_dir", metavar="AUDIO_DIR", help="folder searched recursively for audio files")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", default=None,
                   help="where the fold folders are written (default: manifests/NAME)")
    p.add_argument("--name", default="folder", help="corpus name for the default OUT_DIR (default: %(default)s)")
    p.add_argument("--label-regex", metavar="REGEX",
                   help="take the label from the file name: group 'label' or the first group "
                   "(default: the name of the file's parent folder)")
    p.add_argument("--speaker-regex", metavar="REGEX",
                   help="take the speaker from the file name: group 'speaker' or the first group, "
                   "e.g. '^(spk\\d+)_'; makes the folds speaker-independent")
    p.add_argument("--num-folds", type=_positive_int, default=5, metavar="K",
                   help="number of folds; 1 writes a single train/valid/test split with a fifth "
                   "of the speakers (or utterances) held out for test (default: %(default)s)")

    p = sub.add_parser("json", parents=[common], help="the reference implementation's JSON split files",
                       description="Split files {\"Train\": {file: label}, \"Val\": {...}, "
                       "\"Test\": {...}}, paths absolute or relative to the JSON file. One file "
                       "per fold; without \"Val\", a stratified --valid-fraction of Train is used.")
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="SPLITS.json [MORE.json ...] [OUT_DIR]: one or more split files, then "
                   "OUT_DIR if the last argument does not end in .json (default OUT_DIR: "
                   "manifests/NAME)")
    p.add_argument("--name", default="json", help="corpus name for the default OUT_DIR (default: %(default)s)")


def _comma_list(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def run(args):
    from ..data.audio_cache import AudioCheck
    from ..data.prepare import ValidSpec, parse_label_map

    label_map = parse_label_map(args.label_map) if args.label_map else None
    valid = ValidSpec(getattr(args, "valid", "stratified"), args.valid_fraction, args.seed)
    common = dict(cache_dir=args.cache_dir, check=AudioCheck.from_seconds(args.min_seconds),
                  jobs=args.jobs, progress=not args.no_progress)
    if args.corpus == "iemocap":
        from ..data.corpora.iemocap import PRESETS, prepare_iemocap

        if label_map is None and args.classes:
            label_map = parse_label_map(PRESETS[args.classes])
        result = prepare_iemocap(args.corpus_dir, args.out_dir, label_map=label_map,
                                 subset=args.subset, valid=valid, **common)
    elif args.corpus == "emodb":
        from ..data.corpora.emodb import prepare_emodb

        result = prepare_emodb(args.corpus_dir, args.out_dir, label_map=label_map,
                               folds=args.num_folds, valid=valid, **common)
    elif args.corpus == "ravdess":
        from ..data.corpora.ravdess import prepare_ravdess

        result = prepare_ravdess(args.corpus_dir, args.out_dir, classes=args.classes, calm=args.calm,
                                 label_map=label_map, intensity=args.intensity, protocol=args.protocol,
                                 folds=args.num_folds, valid=valid, **common)
    elif args.corpus == "cremad":
        from ..data.corpora.cremad import prepare_cremad

        result = prepare_cremad(args.corpus_dir, args.out_dir, classes=args.classes, label_map=label_map,
                                labels=args.labels, folds=args.num_folds, valid=valid, **common)
    elif args.corpus == "msp-podcast":
        from ..data.corpora.msp_podcast import prepare_msp_podcast

        result = prepare_msp_podcast(args.corpus_dir, args.out_dir, classes=args.classes,
                                     label_map=label_map, **common)
    elif args.corpus == "esd":
        from ..data.corpora.esd import prepare_esd

        result = prepare_esd(args.corpus_dir, args.out_dir, classes=args.classes, label_map=label_map,
                             language=args.language, speakers=args.speakers, protocol=args.protocol,
                             folds=args.num_folds, valid=valid, **common)
    elif args.corpus == "savee":
        from ..data.corpora.savee import prepare_savee

        result = prepare_savee(args.corpus_dir, args.out_dir, classes=args.classes, label_map=label_map,
                               valid=valid, **common)
    elif args.corpus == "folder":
        from ..data.corpora.custom import prepare_folder

        out_dir = args.out_dir or os.path.join("manifests", args.name)
        result = prepare_folder(args.corpus_dir, out_dir, label_regex=args.label_regex,
                                speaker_regex=args.speaker_regex, label_map=label_map,
                                folds=args.num_folds, valid=valid, **common)
    else:
        from ..data.corpora.custom import prepare_json

        inputs = list(args.inputs)
        out_dir = os.path.join("manifests", args.name)
        if len(inputs) > 1 and not inputs[-1].lower().endswith(".json"):
            out_dir = inputs.pop()
        result = prepare_json(inputs, out_dir, label_map=label_map, valid=valid, **common)
    print(format_summary(result))
    return 0


def format_summary(result) -> str:
    """Counts per fold, split and class as a compact table, then exclusions and conversions."""
    classes = result.class_names
    width = max([5] + [len(c) for c in classes])
    fold_width = max([7] + [len(f) + 1 for f in result.counts])    # "official" is longer than fold10
    header = f"{'fold':<{fold_width}}{'split':<6}{'total':>7}" + "".join(f"{c:>{width + 1}}" for c in classes)
    lines = [f"wrote {len(result.counts)} fold(s) to {result.out_dir}", header]
    for fold, splits in result.counts.items():
        for i, (split, counts) in enumerate(splits.items()):
            cells = "".join(f"{counts.get(c, 0):>{width + 1}}" for c in classes)
            lines.append(f"{fold if i == 0 else '':<{fold_width}}{split:<6}{sum(counts.values()):>7}{cells}")
    lines += result.notes
    if result.dropped:
        dropped = ", ".join(f"{label} {n}" for label, n in sorted(result.dropped.items()))
        lines.append(f"dropped by the label map: {sum(result.dropped.values())} ({dropped})")
    lines.append(f"excluded: {len(result.excluded)} file(s)"
                 + (f", reasons in {os.path.join(result.out_dir, 'excluded.tsv')}" if result.excluded else ""))
    if result.converted:
        lines.append(f"converted to 16 kHz mono 16-bit WAV: {result.converted} file(s) in {result.cache_dir}")
    return "\n".join(lines)

"""Predict the emotion of audio files with a trained classifier.

``fairseq-ser predict --checkpoint CKPT PATH... [--output predictions.jsonl|.csv]``: PATH
are audio files or folders (searched recursively), in any format and at any
sample rate soundfile reads, mono or multichannel. Each file gets its most
probable emotion, the probability of every class and its duration; files
longer than --window-seconds are cut into windows that are scored alone, and
the file's probabilities are the duration-weighted mean of its windows'.
Without --output one readable line per file goes to standard output. A file
that cannot be used gets an error entry and the others go on; the exit status
is 1 when every file failed.

``--backend onnx --checkpoint MODEL.onnx`` runs a model written by
``fairseq-ser export`` with onnxruntime instead of PyTorch: the same files,
windows, batches and outputs, without importing torch or fairseq. Its
windowing defaults are the ones stored at export.
"""

import argparse
import sys

from ..data.audio import AUDIO_EXTENSIONS
from .options import add_device_argument, torch_device


def _seconds(text):
    """argparse type: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}")
    return value


def _positive_seconds(text):
    """argparse type: a number of seconds above 0."""
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def add_windowing_arguments(parser, default_note: str) -> None:
    """--window-seconds, --hop-seconds, --min-window-seconds (read back by :func:`windowing_from_args`)."""
    parser.add_argument("--window-seconds", type=_seconds, metavar="S",
                        help="score longer files in windows of this length; 0 scores every file whole "
                        f"(default: 10; {default_note})")
    parser.add_argument("--hop-seconds", type=_positive_seconds, metavar="S",
                        help="start a window every this many seconds (default: the window length, no overlap)")
    parser.add_argument("--min-window-seconds", type=_seconds, metavar="S",
                        help="a last window shorter than this joins the previous one "
                        "(default: half the window length)")


def windowing_from_args(args, default=None):
    """The Windowing the three options ask for; options not given keep ``default``'s (a Windowing;
    None: the library's default). A window length given starts from that window's own defaults."""
    from ..errors import SerError
    from ..windowing import Windowing

    default = default or Windowing()
    given = args.window_seconds is not None
    window = (args.window_seconds or None) if given else default.window
    hop = args.hop_seconds if args.hop_seconds is not None else (None if given else default.hop)
    min_window = args.min_window_seconds if args.min_window_seconds is not None else (
        None if given else default.min_window)
    try:
        return Windowing(window, hop, min_window)
    except ValueError as e:
        raise SerError(f"--window-seconds / --hop-seconds / --min-window-seconds: {e}")


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="emotion classifier checkpoint (e.g. checkpoints/vft/checkpoint_best.pt), "
                        "or with --backend onnx a model written by fairseq-ser export")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="torch: the checkpoint with PyTorch and fairseq; onnx: an exported .onnx model "
                        "with onnxruntime, without torch or fairseq (default: %(default)s)")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="audio files, or folders searched recursively for --extensions")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the results to FILE: .jsonl (one JSON object per file) or .csv "
                        "(a row per file and per window); default: a readable line per file on stdout")
    add_windowing_arguments(parser, "with --backend onnx, the model's stored default")
    parser.add_argument("--batch-seconds", type=_positive_seconds, metavar="S", default=160.0,
                        help="padded audio per batch in seconds, on a GPU; on the CPU each thread runs one window at a "
                        "time, unpadded (default: %(default)s)")
    parser.add_argument("--chunk-seconds", type=_seconds, metavar="S", default=600.0,
                        help="audio read into memory at a time, in seconds; windows of a chunk are "
                        "batched together (default: %(default)s)")
    parser.add_argument("--extensions", default=",".join(AUDIO_EXTENSIONS), metavar="EXT,...",
                        help="file extensions searched for in folders (default: %(default)s)")
    add_device_argument(parser, "the classifier runs", "; with --backend onnx, cuda uses onnxruntime's "
                        "CUDA provider")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="fp32, or autocast to bf16 / fp16 (fp16 on CUDA only); --backend torch only "
                        "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args):
    import time

    from tqdm import tqdm

    from ..prediction import PredictionStats, find_audio, format_result, output_format, predict_files, write_results

    windowing_from_args(args)  # bad window options fail before the model loads
    if args.output:
        output_format(args.output)
    clf = load_classifier(args)
    windowing = windowing_from_args(args, clf.windowing)
    files = find_audio(args.paths, [e.strip() for e in args.extensions.split(",") if e.strip()])

    stats = PredictionStats()
    began = time.perf_counter()
    with tqdm(total=len(files), desc="predict", unit="file", disable=args.no_progress) as bar:
        results = predict_files(clf, files, windowing, args.batch_seconds,
                                args.chunk_seconds, stats)
        if args.output:
            write_results(results, args.output, clf.class_names, on_result=lambda _: bar.update())
        else:
            for result in results:
                bar.write(format_result(result), file=sys.stdout)
                bar.update()
    elapsed = time.perf_counter() - began
    print(f"predicted {stats.files - stats.failed} of {stats.files} files ({stats.failed} failed): "
          f"{stats.seconds:.1f} s of audio in {stats.windows} windows, {elapsed:.1f} s on {clf.device}, "
          f"{100 * stats.padding:.1f} % padding" + (f"; wrote {args.output}" if args.output else ""),
          file=sys.stderr)
    return 0 if stats.files > stats.failed else 1


def load_classifier(args):
    """The classifier --backend names: PyTorch's EmotionClassifier or the ONNX one (which loads no torch)."""
    from ..errors import SerError

    if args.backend == "onnx":
        if args.precision != "fp32":
            raise SerError("--precision is for --backend torch; an int8 ONNX model is a file of its own "
                           "(fairseq-ser export --quantize int8)")
        from ..onnx_predictor import OnnxEmotionClassifier

        return OnnxEmotionClassifier.from_file(args.checkpoint, device=torch_device(args.device))
    if args.checkpoint.endswith(".onnx"):
        raise SerError(f"{args.checkpoint}: an ONNX model; run it with --backend onnx")
    from ..inference import EmotionClassifier

    return EmotionClassifier.from_checkpoint(args.checkpoint, device=torch_device(args.device),
                                             precision=args.precision)

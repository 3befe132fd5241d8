"""``fairseq-ser``: one entry point, one subcommand per job.

Subcommand modules import heavy libraries (torch, fairseq) inside ``run`` only,
so ``fairseq-ser --help`` answers at once.
"""

import argparse
import importlib
import logging
import sys

from ..errors import SerError

# (subcommand module, one-line help); each module defines add_arguments(parser) and run(args)
SUBCOMMANDS = {
    "prepare": ("fairseq_ser.cli.prepare", "write fold manifests and labels for a corpus"),
    "evaluate": ("fairseq_ser.cli.evaluate", "score a trained classifier on a manifest split"),
    "predict": ("fairseq_ser.cli.predict", "predict the emotion of audio files with a trained classifier"),
    "export": ("fairseq_ser.cli.export", "export a trained classifier to ONNX (verified against PyTorch; int8 optional)"),
    "synth": ("fairseq_ser.cli.synth", "generate the embedded synthetic emotional-speech corpus"),
    "demo": ("fairseq_ser.cli.demo", "run the end-to-end demo on the synthetic corpus"),
    "cv": ("fairseq_ser.cli.cv", "cross-validation of V-FT, TAPT, P-TAPT over folds and seeds: the paper's table"),
    "import-hf": ("fairseq_ser.cli.import_hf", "convert a HuggingFace wav2vec2 folder into a fairseq checkpoint"),
    "pseudo-labels": ("fairseq_ser.cli.pseudo_labels",
                      "P-TAPT pseudo-labels: dump frame features, FAISS k-means, {split}.km{K} files"),
    "subset": ("fairseq_ser.cli.subset",
               "nested labelled subsets of every fold, with the unlabelled audio (low-resource experiments)"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fairseq-ser",
        description="Speech emotion recognition with wav2vec 2.0 on fairseq "
        "(V-FT, TAPT, P-TAPT). Training itself runs through fairseq-hydra-train "
        "with the yaml files in config/.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        stream=sys.stderr,
    )
    try:
        return args._run(args) or 0
    except SerError as e:
        print(f"fairseq-ser {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fairseq-ser {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

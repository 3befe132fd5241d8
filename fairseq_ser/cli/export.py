"""Export a trained classifier to ONNX, for the predictor that needs neither torch nor fairseq.

``fairseq-ser export CKPT OUT.onnx [--quantize int8 [--manifest DATA_DIR --gen-subset test]]``.
The graph takes 16 kHz waveforms and a padding mask (True at padding), both
``[batch, samples]`` with dynamic axes, and gives class probabilities; the
class names and the default windowing are stored as model metadata. Before
the command returns, onnxruntime runs the file on speech (EmoDB when found,
else generated utterances, or --verify-audio), each utterance alone and all
in one padded batch; if a probability differs from PyTorch's by more than
1e-4 the file is removed and the command fails. ``--quantize int8`` also
writes OUT.int8.onnx (int8 weights of every MatMul and Gemm, onnxruntime's
dynamic quantization) and reports how far it moves from the fp32 model; with
--manifest, how many predictions change on a split and the UA of each.
Run the files with ``fairseq-ser predict --backend onnx --checkpoint OUT.onnx``.
"""

from .predict import add_windowing_arguments

DEFAULT_OPSET = 17  # onnx_export.DEFAULT_OPSET, spelled out: importing it loads torch


def add_arguments(parser):
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="emotion classifier checkpoint (e.g. checkpoints/vft/checkpoint_best.pt)")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help="ONNX opset to write, 14 to 20; lower it for an older onnxruntime "
                        "(default: %(default)s)")
    parser.add_argument("--quantize", choices=["int8"],
                        help="also write OUT.int8.onnx with dynamic int8 weights of every MatMul and Gemm")
    parser.add_argument("--manifest", metavar="DATA_DIR",
                        help="with --quantize: score fp32 and int8 on --gen-subset of this manifest folder and "
                        "report how many predictions change and the UA of each")
    parser.add_argument("--gen-subset", default="test", metavar="SPLIT",
                        help="the split of --manifest to score, as in fairseq-ser evaluate (default: %(default)s)")
    parser.add_argument("--labels", default="emo", metavar="EXT",
                        help="label file extension of --manifest (default: %(default)s)")
    parser.add_argument("--verify-audio", nargs="+", metavar="PATH",
                        help="audio files or folders to verify the graph on (up to 8 files of them; "
                        "default: EmoDB when found, else generated speech)")
    add_windowing_arguments(parser, "stored in the model as the default of its predictions")
    parser.add_argument("--batch-seconds", type=float, default=160.0, metavar="S",
                        help="with --manifest: padded audio per batch in seconds (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args):
    from ..errors import SerError
    from ..onnx_export import compare_on_split, export_onnx, quantize_int8
    from .predict import windowing_from_args

    if args.manifest and not args.quantize:
        raise SerError("--manifest compares the int8 model with the fp32 one: give --quantize int8 too")
    report = export_onnx(args.checkpoint, args.output, args.opset, windowing_from_args(args),
                         args.verify_audio)
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, opset {report.opset}); verified on "
          f"{report.verified_on}: max |p_onnx - p_torch| = {report.max_diff_single:.2e} alone, "
          f"{report.max_diff_padded:.2e} in one padded batch")
    if args.quantize:
        q = quantize_int8(args.output, verify_audio=args.verify_audio)
        print(f"wrote {q.path} ({q.size_bytes / 2**20:.1f} MiB, int8 weights); against fp32 on the same "
              f"speech: max |p_int8 - p_fp32| = {q.max_diff:.2e}, {q.changed} of {q.total} predictions changed")
        if args.manifest:
            c = compare_on_split(args.output, q.path, args.manifest, args.gen_subset, args.labels,
                                 args.batch_seconds, progress=not args.no_progress)
            print(f"{args.manifest} {c['split']}: {c['changed']} of {c['utterances']} predictions changed; "
                  f"UA fp32 {100 * c['ua_fp32']:.2f} %, int8 {100 * c['ua_int8']:.2f} % "
                  f"(int8 - fp32: {100 * (c['ua_int8'] - c['ua_fp32']):+.2f} points)")
    return 0

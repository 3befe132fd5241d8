"""Exporting a trained classifier to ONNX, checking the graph against PyTorch, and int8 quantization.

:func:`export_onnx` traces the classifier with torch's TorchScript-based
exporter into the graph :mod:`.onnx_predictor` runs (inputs ``waveforms`` and
``padding_mask``, output ``probabilities``, dynamic batch and length axes, the
metadata of :data:`.onnx_predictor.METADATA_KEYS`). Before it returns, the
file is loaded by onnxruntime and compared with PyTorch on speech: each
utterance alone and all of them in one padded batch, against PyTorch on each
alone. If a probability differs by more than the tolerance (1e-4), the file is
removed and :class:`SerError` says so.

:func:`quantize_int8` adds a copy whose MatMul / Gemm weights are int8
(onnxruntime's dynamic quantization: activations are quantized per batch at
run time); :func:`compare_on_split` scores both files on a manifest split.
"""

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import __version__, metrics
from .data.audio import SAMPLE_RATE, read_audio
from .data.manifest import DEFAULT_LABEL_EXT, encode_labels, label_path, load_split
from .errors import CheckpointError, SerError, first_line
from .fileio import atomic_path
from .onnx_predictor import CPU, FORMAT, INPUTS, OUTPUT, QUANTIZATION_KEY, OnnxEmotionClassifier
from .prediction import find_audio
from .windowing import Windowing, pad_batch

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# the TorchScript exporter's range; 14 is the first with scaled_dot_product_attention
OPSETS = tuple(range(14, 21))
TOLERANCE = 1e-4
# verification speech: EmoDB where it is found (EMODB_DIR, or beside the repository as on the
# development machines), else generated utterances
SPEECH_DIRS = (os.environ.get("EMODB_DIR"), os.path.join("..", "shared", "corpora", "emodb"))
VERIFY_FILES = 8


@dataclass
class ExportReport:
    path: str
    checkpoint: str
    opset: int
    verified_on: str  # what the check ran on, for the message
    max_diff_single: float  # each utterance alone, against PyTorch
    max_diff_padded: float  # all in one padded batch, against PyTorch on each alone
    size_bytes: int


@dataclass
class QuantizationReport:
    path: str
    size_bytes: int
    max_diff: float  # against the fp32 model, on the verification speech
    changed: int  # predictions that differ from the fp32 model's there
    total: int


class _ProbabilityGraph(torch.nn.Module):
    """What is traced: the classifier's logits turned into probabilities."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, waveforms, padding_mask):
        return torch.softmax(self.model(waveforms, padding_mask=padding_mask).float(), dim=-1)


@contextlib.contextmanager
def _traceable_fairseq():
    """fairseq's Transformer encoder with two helpers replaced while it is traced.

    ``pad_to_multiple`` pads the frames to an even count for fp16 kernels; it
    reads the length as a Python number, which a trace cannot keep dynamic.
    Without it the padded frame is simply absent; it is masked anyway, so the
    outputs are unchanged. ``index_put`` zeroes padded frames with boolean
    indexing, which the exporter turns into a node with the example's shape
    built in; ``masked_fill`` does the same and traces cleanly.
    """
    from fairseq.models.wav2vec import wav2vec2

    original_pad, original_index_put = wav2vec2.pad_to_multiple, wav2vec2.index_put

    def pad_to_multiple(x, multiple, dim=-1, value=0):
        return x, 0

    def index_put(tensor, indices, value):
        if indices.dtype == torch.bool and indices.dim() == tensor.dim() - 1:
            return tensor.masked_fill(indices.unsqueeze(-1), value)
        return original_index_put(tensor, indices, value)

    wav2vec2.pad_to_multiple, wav2vec2.index_put = pad_to_multiple, index_put
    try:
        yield
    finally:
        wav2vec2.pad_to_multiple, wav2vec2.index_put = original_pad, original_index_put


def export_onnx(checkpoint: str, output: str, opset: int = DEFAULT_OPSET, windowing: Windowing = Windowing(),
                verify_audio: Optional[Sequence[str]] = None, tolerance: float = TOLERANCE) -> ExportReport:
    """Write ``checkpoint``'s classifier to ``output`` as ONNX, verified against PyTorch.

    A checkpoint that is not an emotion classifier raises CheckpointError
    naming it; the rest is :func:`export_classifier`'s.
    """
    from .inference import EmotionClassifier

    _check_opset(opset)
    clf = EmotionClassifier.from_checkpoint(checkpoint, device="cpu")
    return export_classifier(clf, output, opset, windowing, verify_audio, tolerance)


def export_classifier(clf, output: str, opset: int = DEFAULT_OPSET, windowing: Windowing = Windowing(),
                      verify_audio: Optional[Sequence[str]] = None, tolerance: float = TOLERANCE) -> ExportReport:
    """Write an fp32 CPU :class:`~fairseq_ser.inference.EmotionClassifier` to ``output`` as ONNX.

    ``windowing`` is stored as the model's default. ``verify_audio``: audio
    files or folders to verify on (default: :data:`SPEECH_DIRS`, else generated
    speech). A graph that differs from PyTorch by more than ``tolerance`` is
    removed and raises SerError.
    """
    import onnx

    _check_opset(opset)
    checkpoint = clf.path or "the classifier"
    graph = _ProbabilityGraph(clf.model).eval()
    rng = np.random.default_rng(0)
    example = pad_batch([0.1 * rng.standard_normal(n).astype(np.float32) for n in (32000, 20800)])
    dynamic = {INPUTS[0]: {0: "batch", 1: "samples"}, INPUTS[1]: {0: "batch", 1: "samples"}, OUTPUT: {0: "batch"}}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output))) as tmp:
        traced = os.path.join(tmp, "traced.onnx")
        try:
            with _traceable_fairseq(), torch.no_grad(), warnings.catch_warnings():
                # the tracer's warnings on Python values (shape asserts, the padded-path switch)
                # and the exporter's deprecation notice; the check below is what guards the graph
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, tuple(torch.from_numpy(a) for a in example), traced, dynamo=False,
                                  opset_version=opset, input_names=list(INPUTS), output_names=[OUTPUT],
                                  dynamic_axes=dynamic, do_constant_folding=True)
        except Exception as e:
            raise SerError(f"{checkpoint}: ONNX export at opset {opset} failed: {first_line(e)}")
        model = onnx.load(traced)
        _set_metadata(model, {
            "fairseq_ser.format": FORMAT,
            "fairseq_ser.class_names": json.dumps(clf.class_names),
            "fairseq_ser.windowing": json.dumps({"window": windowing.window, "hop": windowing.hop,
                                                 "min_window": windowing.min_window}),
            "fairseq_ser.sample_rate": str(SAMPLE_RATE),
            "fairseq_ser.version": __version__,
            "fairseq_ser.checkpoint": os.path.basename(checkpoint),
        })
        with atomic_path(output) as final:
            onnx.save(model, final)
    described, audio = verification_audio(verify_audio)
    try:
        single, padded = _max_differences(clf, OnnxEmotionClassifier.from_file(output, providers=[CPU]), audio)
    except CheckpointError as e:  # this onnxruntime cannot run the opset written
        os.remove(output)
        raise SerError(f"{e}; the file was removed")
    if not max(single, padded) <= tolerance:
        os.remove(output)
        raise SerError(f"{output}: the ONNX graph's probabilities differ from PyTorch's by up to "
                       f"{max(single, padded):.2e} (alone {single:.2e}, in a padded batch {padded:.2e}; "
                       f"allowed {tolerance:g}) on {described}; the file was removed")
    logger.debug("%s: verified on %s, max |p_onnx - p_torch| %.2e alone, %.2e padded",
                 output, described, single, padded)
    return ExportReport(output, checkpoint, opset, described, single, padded, os.path.getsize(output))


def _check_opset(opset: int) -> None:
    if opset not in OPSETS:
        raise SerError(f"opset {opset}: the exporter writes opsets {OPSETS[0]} to {OPSETS[-1]}")


def _set_metadata(model, values: Dict[str, str]) -> None:
    kept = {p.key: p.value for p in model.metadata_props if p.key not in values}
    del model.metadata_props[:]
    for key, value in {**kept, **values}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _max_differences(reference, candidate, audio: List[np.ndarray]) -> Tuple[float, float]:
    """Max |p| difference of ``candidate`` from ``reference`` (each on each utterance alone):
    ``candidate`` on each alone, and on all in one padded batch."""
    alone = np.stack([reference.batch_probabilities(*pad_batch([a]))[0] for a in audio])
    single = np.stack([candidate.batch_probabilities(*pad_batch([a]))[0] for a in audio])
    together = candidate.batch_probabilities(*pad_batch(audio))
    return float(np.abs(single - alone).max()), float(np.abs(together - alone).max())


def verification_audio(paths: Optional[Sequence[str]] = None) -> Tuple[str, List[np.ndarray]]:
    """``(description, waveforms)``: up to :data:`VERIFY_FILES` files of ``paths`` (or of EmoDB in
    :data:`SPEECH_DIRS`), spread over their sorted list; generated speech when there are none."""
    if paths is None:
        found = [os.path.join(d, "wav") for d in SPEECH_DIRS if d and os.path.isdir(os.path.join(d, "wav"))]
        paths, what = found[:1], "EmoDB files"
    else:
        what = "files"
    if paths:
        files = find_audio(list(paths), ["wav", "flac", "ogg", "mp3"])
        chosen = [files[int(i)] for i in np.unique(np.linspace(0, len(files) - 1, VERIFY_FILES).round())]
        audio = [read_audio(f) for f in chosen]
        seconds = sum(len(a) for a in audio) / SAMPLE_RATE
        return f"{len(audio)} {what} ({seconds:.1f} s, from {paths[0]})", audio
    from .data.synthetic import EMOTIONS, make_speaker, synthesize

    rng = np.random.default_rng(0)
    labels = sorted(EMOTIONS)
    audio = [synthesize(rng, make_speaker(0, i), labels[i % len(labels)], seconds)[0].astype(np.float32)
             for i, seconds in enumerate((0.9, 1.7, 2.6, 1.2, 3.1, 2.0))]
    seconds = sum(len(a) for a in audio) / SAMPLE_RATE
    return f"{len(audio)} generated utterances ({seconds:.1f} s)", audio


def int8_path(path: str) -> str:
    """``model.onnx`` -> ``model.int8.onnx``."""
    root, ext = os.path.splitext(path)
    return f"{root}.int8{ext or '.onnx'}"


def quantize_int8(fp32_path: str, output: Optional[str] = None,
                  verify_audio: Optional[Sequence[str]] = None) -> QuantizationReport:
    """Write a dynamic int8 copy of an exported model (weights of MatMul and Gemm) and compare it with the fp32 one.

    The comparison runs on the verification speech of :func:`verification_audio`;
    there is no tolerance, since int8 changes probabilities by design.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output = output or int8_path(fp32_path)
    fp32 = OnnxEmotionClassifier.from_file(fp32_path, providers=[CPU])
    with atomic_path(output) as tmp:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing advice on the root logger
        try:
            quantize_dynamic(fp32_path, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        except Exception as e:
            raise SerError(f"{fp32_path}: int8 quantization failed: {first_line(e)}")
        finally:
            root.setLevel(level)
        model = onnx.load(tmp)
        _set_metadata(model, {QUANTIZATION_KEY: "int8-dynamic (MatMul, Gemm weights)"})
        onnx.save(model, tmp)
    int8 = OnnxEmotionClassifier.from_file(output, providers=[CPU])
    _, audio = verification_audio(verify_audio)
    p32 = fp32.predict_proba(audio)
    p8 = int8.predict_proba(audio)
    return QuantizationReport(output, os.path.getsize(output), float(np.abs(p8 - p32).max()),
                              int((p8.argmax(1) != p32.argmax(1)).sum()), len(audio))


def compare_on_split(fp32_path: str, int8: str, data_dir: str, split: str = "test",
                     labels_ext: str = DEFAULT_LABEL_EXT, batch_seconds: float = 160.0,
                     progress: bool = True) -> Dict:
    """Both models on ``split`` of ``data_dir``: how many predictions change and the UA of each."""
    from tqdm import tqdm

    from .evaluation import ManifestAudio

    models = [OnnxEmotionClassifier.from_file(p) for p in (fp32_path, int8)]
    data = load_split(data_dir, split, labels_ext)
    refs = encode_labels(data.labels, models[0].class_names, label_path(data_dir, split, labels_ext))
    lengths = [n for _, n in data.manifest.entries]
    preds = []
    for name, clf in zip(("fp32", "int8"), models):
        with tqdm(total=len(lengths), desc=f"{name} on {split}", unit="utt", disable=not progress) as bar:
            probs = clf.predict_proba(ManifestAudio(data.manifest), lengths=lengths,
                                      max_batch_samples=int(batch_seconds * SAMPLE_RATE), progress=bar.update)
        preds.append(probs.argmax(1))
    ua = [metrics.unweighted_accuracy(metrics.confusion_matrix(refs, p, len(models[0].class_names)))
          for p in preds]
    return {"split": split, "data": data_dir, "utterances": len(refs),
            "changed": int((preds[0] != preds[1]).sum()), "ua_fp32": ua[0], "ua_int8": ua[1]}

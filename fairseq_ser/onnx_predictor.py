"""Predicting emotions with an exported ONNX classifier: numpy, soundfile, soxr and onnxruntime only.

``fairseq-ser export`` writes the classifier as an ONNX graph with these
inputs and output (batch and length axes dynamic):

- ``waveforms``: float32 ``(batch, samples)``, 16 kHz mono, zero-padded;
- ``padding_mask``: bool ``(batch, samples)``, True at padding (fairseq's convention);
- ``probabilities``: float32 ``(batch, classes)``.

The graph holds the whole model, the backbone's input normalisation
included, and the padded group-norm CNN, so a window's probabilities do not
depend on the batch it runs in. The class names and the default windowing are
stored as model metadata (:data:`METADATA_KEYS`); a file without them is
refused. :class:`OnnxEmotionClassifier` reads, resamples, windows and batches
audio exactly as the PyTorch :class:`~fairseq_ser.inference.EmotionClassifier`
does (both are :class:`~fairseq_ser.windowing.WindowedClassifier`), and neither
torch nor fairseq is imported.
"""

import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from .data.audio import SAMPLE_RATE
from .errors import CheckpointError
from .windowing import MAX_SIDE_BY_SIDE, WindowedClassifier, Windowing

logger = logging.getLogger(__name__)

INPUTS = ("waveforms", "padding_mask")
OUTPUT = "probabilities"
FORMAT = "1"
# metadata_props of an exported model: what each key holds
METADATA_KEYS = {
    "fairseq_ser.format": "the version of this layout of inputs, output and metadata (" + FORMAT + ")",
    "fairseq_ser.class_names": "JSON list of the class names, in output order",
    "fairseq_ser.windowing": "JSON object of the default Windowing fields (window, hop, min_window; seconds or null)",
    "fairseq_ser.sample_rate": "the rate the waveforms must have (16000)",
    "fairseq_ser.version": "the fairseq-ser version that exported the model",
    "fairseq_ser.checkpoint": "file name of the checkpoint it was exported from",
}
# set on quantized copies only
QUANTIZATION_KEY = "fairseq_ser.quantization"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def default_providers(device: Optional[str] = None) -> List:
    """onnxruntime execution providers for ``device``: None or ``auto`` (CUDA when this
    onnxruntime has it, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in (None, "auto"):
        return [CUDA, CPU] if CUDA in available else [CPU]
    if device == "cpu":
        return [CPU]
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise CheckpointError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    if CUDA not in available:
        raise CheckpointError(f"device {device!r}: this onnxruntime has no CUDA execution provider "
                              "(install onnxruntime-gpu)")
    return [(CUDA, {"device_id": int(match.group(1) or 0)}), CPU]


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> Optional[int]:
    """``OMP_NUM_THREADS`` when set (torch follows it; onnxruntime does not on its own), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class OnnxEmotionClassifier(WindowedClassifier):
    """An exported classifier run by onnxruntime, with :class:`~fairseq_ser.inference.EmotionClassifier`'s methods.

    >>> clf = OnnxEmotionClassifier.from_file("model.onnx")
    >>> clf.predict(wav, sample_rate).label

    ``predict``, ``predict_batch``, ``predict_windows`` and ``predict_proba``
    are :class:`~fairseq_ser.windowing.WindowedClassifier`'s; ``windowing`` is
    the default stored at export. ``device`` is ``cuda`` when the CUDA provider
    runs the model, else ``cpu``.
    """

    def __init__(self, session, path: str, metadata: Dict[str, str]):
        self.session = session
        self.path = path
        self.metadata = dict(metadata)
        self.class_names = _class_names(metadata, path)
        self.windowing = _windowing(metadata, path)
        self.providers = session.get_providers()
        self.device = "cuda" if CUDA in self.providers else "cpu"
        self.quantization = metadata.get(QUANTIZATION_KEY)
        self.side_by_side = 1
        self._check_signature()

    @classmethod
    def from_file(cls, path: str, providers: Optional[Sequence] = None, device: Optional[str] = None,
                  threads: Optional[int] = None) -> "OnnxEmotionClassifier":
        """Load an exported model.

        ``providers``: onnxruntime execution providers; default
        :func:`default_providers` of ``device``. ``threads``: default
        :func:`default_threads`; on the CPU, that many utterances run side by
        side with one onnxruntime thread each (the usable cores when None),
        elsewhere onnxruntime's intra-op threads. A file that is not an
        ONNX model, that this onnxruntime cannot run (an opset or IR version
        newer than it knows) or that lacks fairseq-ser's metadata raises
        :class:`CheckpointError` naming it.
        """
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: ONNX model not found")
        options = ort.SessionOptions()
        threads = threads if threads is not None else default_threads()
        providers = list(providers) if providers is not None else default_providers(device)
        side_by_side = 1
        if providers == [CPU]:
            # on the CPU, utterances run side by side, sharing the threads out (see parallel_batches)
            cores = threads or _usable_cores()
            side_by_side = min(cores, MAX_SIDE_BY_SIDE)
            options.intra_op_num_threads = max(1, cores // side_by_side)
        elif threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / ... types
            if providers == [CPU] or not _mentions_provider(str(e)):
                raise CheckpointError(load_error(path, e))
            # the CUDA provider is installed but cannot start here (no GPU, missing CUDA libraries)
            logger.warning("%s: the CUDA provider did not start (%s); running on the CPU", path,
                           _reason(str(e), path))
            try:
                session = ort.InferenceSession(path, sess_options=options, providers=[CPU])
            except Exception as e2:
                raise CheckpointError(load_error(path, e2))
        metadata = session.get_modelmeta().custom_metadata_map
        check_metadata(metadata, path)
        clf = cls(session, path, metadata)
        clf.side_by_side = side_by_side
        return clf

    def parallel_batches(self) -> int:
        """On the CPU, the threads asked for (``threads``, else ``OMP_NUM_THREADS``, else the usable
        cores), at most :data:`~fairseq_ser.windowing.MAX_SIDE_BY_SIDE`: that many utterances run at
        once, sharing the threads out (one each on up to 4 threads). On 2 cores that ran 24 EmoDB
        files faster than one at a time on two threads (see the README's Inference)."""
        return self.side_by_side

    def batch_probabilities(self, source: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        """``(B, num_classes)`` probabilities of a padded batch (True in ``padding_mask`` marks padding)."""
        feed = {INPUTS[0]: np.ascontiguousarray(source, dtype=np.float32),
                INPUTS[1]: np.ascontiguousarray(padding_mask, dtype=bool)}
        return self.session.run([OUTPUT], feed)[0]

    def _check_signature(self):
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != list(INPUTS) or outputs != [OUTPUT]:
            raise CheckpointError(f"{self.path}: inputs {inputs} and outputs {outputs}; a fairseq-ser "
                                  f"model has inputs {list(INPUTS)} and output {OUTPUT!r}")
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.class_names):
            raise CheckpointError(f"{self.path}: {classes} outputs but {len(self.class_names)} class names")


def check_metadata(metadata: Dict[str, str], path: str) -> None:
    """CheckpointError naming ``path`` unless ``metadata`` is fairseq-ser's, in the format this version reads."""
    if "fairseq_ser.format" not in metadata:
        raise CheckpointError(f"{path}: an ONNX model without fairseq-ser's metadata (no fairseq_ser.format "
                              "entry); write one with `fairseq-ser export CHECKPOINT OUT.onnx`")
    if metadata["fairseq_ser.format"] != FORMAT:
        raise CheckpointError(f"{path}: fairseq-ser ONNX format {metadata['fairseq_ser.format']!r}; this "
                              f"version reads format {FORMAT}")
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise CheckpointError(f"{path}: fairseq-ser metadata without {', '.join(missing)}")
    if metadata["fairseq_ser.sample_rate"] != str(SAMPLE_RATE):
        raise CheckpointError(f"{path}: expects {metadata['fairseq_ser.sample_rate']} Hz audio; "
                              f"this version feeds {SAMPLE_RATE} Hz")


def _class_names(metadata, path) -> List[str]:
    try:
        names = json.loads(metadata["fairseq_ser.class_names"])
    except (KeyError, ValueError):
        names = None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: fairseq_ser.class_names is not a JSON list of names")
    return names


def _windowing(metadata, path) -> Windowing:
    try:
        fields = json.loads(metadata["fairseq_ser.windowing"])
        return Windowing(**fields)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: fairseq_ser.windowing is not a valid windowing ({e})")


def load_error(path: str, error: Exception) -> str:
    """The message for a model onnxruntime refuses: the file, onnxruntime's version and its reason."""
    import onnxruntime as ort

    reason = _reason(str(error), path)
    if "INVALID_PROTOBUF" in str(error) or "Protobuf parsing failed" in reason:
        return f"{path}: not an ONNX model (onnxruntime cannot parse it)"
    hint = ""
    if re.search(r"opset|IR version", reason, re.IGNORECASE):
        hint = "; export it again with a lower --opset, or install a newer onnxruntime"
    return f"{path}: onnxruntime {ort.__version__} cannot run this model: {reason}{hint}"


def _reason(message: str, path: str) -> str:
    # "[ONNXRuntimeError] : 1 : FAIL : Load model from P failed:/onnxruntime_src/x.cc:202 void f(...) text"
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", message.strip())
    text = text.replace(f"Load model from {path} failed:", "")
    text = re.sub(r"^\S*onnxruntime_src\S*:\d+ .*?\) (?=\S)", "", text.strip())
    return text.strip().splitlines()[0] if text.strip() else message.strip()


def _mentions_provider(message: str) -> bool:
    return "CUDA" in message or "cuda" in message or "provider" in message.lower()

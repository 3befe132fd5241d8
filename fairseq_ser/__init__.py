"""fairseq-ser: wav2vec 2.0 fine-tuning strategies for speech emotion recognition.

Used as a fairseq user dir (``common.user_dir``), importing this package
registers its tasks, models and criterions. fairseq auto-imports only the
``tasks/`` and ``models/`` folders of a user dir, so criterions and learning
rate schedulers are imported here explicitly.

The corpus tools and ``fairseq-ser --help`` do not need fairseq, so the
registration happens on import only when fairseq is already loaded (the
user-dir case); code that builds models calls :func:`register` first.

``from fairseq_ser import EmotionClassifier`` (prediction on audio arrays)
imports torch and fairseq on first use only; ``OnnxEmotionClassifier`` (the
same on an exported ONNX model) needs neither, only onnxruntime.
"""

import importlib
import sys

__version__ = "0.1.0"

# public names loaded on first access, so that importing the package stays light
_LAZY = {
    "EmotionClassifier": "inference",
    "OnnxEmotionClassifier": "onnx_predictor",
    "Prediction": "windowing",
    "WindowPrediction": "windowing",
    "Windowing": "windowing",
}


def register():
    """Import the modules that register ``ser_*`` tasks, models and criterions with fairseq."""
    from . import criterions, models, optim, tasks  # noqa: F401


if "fairseq" in sys.modules:
    register()


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Frame feature extractors for pseudo-labels: what the k-means clusters.

An extractor is any object with

- ``describe() -> dict``: what produces the features (stored beside them, so a
  features folder is never mixed with features of another checkpoint or layer);
  the two extractors here give the same keys (see :meth:`CheckpointExtractor.describe`);
- ``dim``: the feature dimension;
- ``num_frames(num_samples) -> int``: how many frames the P-TAPT model
  (a wav2vec 2.0) produces for an utterance of ``num_samples`` samples, i.e.
  its CNN output length (:func:`fairseq_ser.frames.num_frames` for the standard CNN);
- ``extract(wav) -> (T, dim) float32``: the features of one utterance.

:func:`load_extractor` picks the extractor from the checkpoint's model name: a
P-TAPT stage-1 frame emotion model (``ser_frame_emotion``,
:class:`FrameEmotionExtractor`), or a chosen layer of any wav2vec 2.0 checkpoint
:func:`~fairseq_ser.models.checkpoint.load_backbone` accepts
(:class:`Wav2Vec2LayerExtractor`).
"""

import json
import os
from typing import Any, Dict, Optional, Protocol

import numpy as np

from ..errors import CheckpointError
from ..frames import num_frames

FRAME_EMOTION_MODEL = "ser_frame_emotion"


class FeatureExtractor(Protocol):
    dim: int

    def describe(self) -> Dict[str, Any]: ...

    def num_frames(self, num_samples: int) -> int: ...

    def extract(self, wav: np.ndarray) -> np.ndarray: ...


def checkpoint_identity(path: str) -> Dict[str, Any]:
    """Absolute path, size and modification time of a checkpoint file (what the features came from)."""
    st = os.stat(path)
    return {"checkpoint": os.path.abspath(path), "checkpoint_size": int(st.st_size),
            "checkpoint_mtime": int(st.st_mtime_ns)}


class CheckpointExtractor:
    """What both extractors share: the checkpoint they read, and one description of it."""

    kind = ""  # the ``extractor`` of the description

    def __init__(self, path: str, model: str, backbone: str, dim: int, normalize: bool,
                 layer: Optional[int] = None):
        self.path = path
        self.model_name = model
        self.backbone = backbone
        self.dim = int(dim)
        self.normalize = bool(normalize)
        self.layer = layer

    def describe(self) -> Dict[str, Any]:
        """``extractor`` (kind), ``model`` (the checkpoint's), ``backbone``, ``checkpoint``,
        ``checkpoint_size``, ``checkpoint_mtime``, ``layer`` (None: the model's one output),
        ``dim`` and ``normalize`` (the waveform is normalised first)."""
        return {"extractor": self.kind, "model": self.model_name, "backbone": self.backbone,
                **checkpoint_identity(self.path), "layer": self.layer, "dim": self.dim,
                "normalize": self.normalize}


class Wav2Vec2LayerExtractor(CheckpointExtractor):
    """Output of Transformer layer ``layer`` (1-based) of a wav2vec 2.0; 0 = the projected CNN features.

    No masking and no dropout (eval mode); the waveform is normalised when the
    checkpoint was pretrained with ``normalize``, as fairseq does.
    """

    kind = "wav2vec2_layer"

    def __init__(self, path: str, layer: int):
        import torch

        from ..models.backbone import build_wav2vec2, load_backbone_weights
        from ..models.checkpoint import input_normalize, load_backbone

        pretrained = load_backbone(path)
        model = build_wav2vec2(pretrained.w2v_args)
        load_backbone_weights(model, pretrained.weights, path, keep_pretraining_modules=False)
        num_layers = len(model.encoder.layers)
        if not 0 <= layer <= num_layers:
            raise CheckpointError(f"{path}: --layer {layer} is out of range; this wav2vec 2.0 has "
                                  f"{num_layers} Transformer layers (use 0 for the projected CNN features)")
        super().__init__(path, pretrained.source_model, "wav2vec 2.0", model.cfg.encoder_embed_dim,
                         input_normalize(pretrained.w2v_args), layer=int(layer))
        self.model = model.eval()
        self._torch = torch

    def num_frames(self, num_samples: int) -> int:
        torch = self._torch
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(int(num_samples))))

    def extract(self, wav: np.ndarray) -> np.ndarray:
        from ..models.masked_encoder import normalize_waveform, project_features

        torch = self._torch
        with torch.inference_mode():
            source = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0)
            if self.normalize:
                source = normalize_waveform(source, None)
            x, _ = project_features(self.model, source, None)
            if self.layer > 0:
                x, _ = self.model.encoder(x, padding_mask=None, layer=self.layer - 1)
            return x[0].float().numpy()


class FrameEmotionExtractor(CheckpointExtractor):
    """A trained stage-1 model (``ser_frame_emotion``) turning 16 kHz waveforms into its frame features."""

    kind = FRAME_EMOTION_MODEL

    def __init__(self, model, path: str, device):
        super().__init__(path, FRAME_EMOTION_MODEL, "wav2vec 1.0" if model.wav2vec1 else "wav2vec 2.0",
                         model.frame_dim, model.normalize_input)
        self.model = model.eval().to(device)
        self.device = device

    @staticmethod
    def num_frames(num_samples: int) -> int:
        return num_frames(num_samples)

    def extract(self, wav: np.ndarray) -> np.ndarray:
        """``(T, dim)`` float32 features of one mono 16 kHz waveform; T = ``num_frames(len(wav))``."""
        import torch

        with torch.inference_mode():
            source = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0).to(self.device)
            # extract_frame_features normalises the waveform when the backbone was pretrained on normalised audio
            features, _ = self.model.extract_frame_features(source, None)
            return features[0].float().cpu().numpy()


def load_frame_extractor(path: str, device: Optional[str] = None) -> FrameEmotionExtractor:
    """Load a ``ser_frame_emotion`` checkpoint on its own (backbone config and classes are stored in it).

    ``device``: default CUDA when available, else the CPU.
    """
    import torch

    from ..models.checkpoint import load_trained

    model = load_trained(path, FRAME_EMOTION_MODEL)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return FrameEmotionExtractor(model, path, dev)


def load_extractor(path: str, layer: Optional[int] = None) -> FeatureExtractor:
    """The extractor for checkpoint ``path``: stage-1 frame emotion model, or wav2vec 2.0 at ``layer``."""
    from ..models.checkpoint import read_checkpoint, stored_model_name

    state = read_checkpoint(path)
    name = stored_model_name(state, path)
    del state
    if name == FRAME_EMOTION_MODEL:
        if layer is not None:
            raise CheckpointError(f"{path}: a {FRAME_EMOTION_MODEL!r} model has one feature output; "
                                  "--layer is only for plain wav2vec 2.0 checkpoints")
        return load_frame_extractor(path)
    if layer is None:
        raise CheckpointError(f"{path}: holds a {name!r} model; pass --layer L to cluster the output of "
                              "its Transformer layer L (0 = projected CNN features)")
    return Wav2Vec2LayerExtractor(path, layer)


def source_description(extractor: FeatureExtractor) -> Dict[str, Any]:
    """``extractor.describe()`` with the fields every features folder is checked on filled in."""
    desc = dict(extractor.describe())
    desc.setdefault("extractor", type(extractor).__name__)
    desc.setdefault("layer", None)
    desc["dim"] = int(extractor.dim)
    if "checkpoint" not in desc:
        raise CheckpointError(f"{type(extractor).__name__}.describe() does not name its checkpoint")
    # compared with what json files hold, so only what survives a json round trip
    return json.loads(json.dumps(desc, sort_keys=True))

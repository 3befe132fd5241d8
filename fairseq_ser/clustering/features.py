"""Frame feature extractors for pseudo-labels: what the k-means clusters.

An extractor is any object with

- ``describe() -> dict``: what produces the features (stored beside them, so a
  features folder is never mixed with features of another checkpoint or layer);
- ``dim``: the feature dimension;
- ``num_frames(num_samples) -> int``: how many frames the P-TAPT model
  (a wav2vec 2.0) produces for an utterance of ``num_samples`` samples, i.e.
  its CNN output length (``floor((n - 400) / 320) + 1`` for the standard CNN);
- ``extract(wav) -> (T, dim) float32``: the features of one utterance.

:func:`load_extractor` picks the extractor from the checkpoint's model name: a
P-TAPT stage-1 frame emotion model (``ser_frame_emotion``), or a chosen layer
of any wav2vec 2.0 checkpoint :func:`~fairseq_ser.models.pretrained.load_backbone`
accepts.
"""

import json
import os
from typing import Any, Dict, Optional, Protocol

import numpy as np

from ..errors import CheckpointError

FRAME_EMOTION_MODEL = "ser_frame_emotion"


class FeatureExtractor(Protocol):
    dim: int

    def describe(self) -> Dict[str, Any]: ...

    def num_frames(self, num_samples: int) -> int: ...

    def extract(self, wav: np.ndarray) -> np.ndarray: ...


def checkpoint_identity(path: str) -> Dict[str, Any]:
    """Absolute path, size and modification time of a checkpoint file (what the features came from)."""
    st = os.stat(path)
    return {"checkpoint": os.path.abspath(path), "size": int(st.st_size), "mtime": int(st.st_mtime_ns)}


class Wav2Vec2LayerExtractor:
    """Output of Transformer layer ``layer`` (1-based) of a wav2vec 2.0; 0 = the projected CNN features.

    No masking and no dropout (eval mode); the waveform is normalised when the
    checkpoint was pretrained with ``normalize``, as fairseq does.
    """

    kind = "wav2vec2_layer"

    def __init__(self, path: str, layer: int):
        import torch

        from ..models.pretrained import build_wav2vec2, load_backbone, load_backbone_weights

        pretrained = load_backbone(path)
        model = build_wav2vec2(pretrained.w2v_args)
        load_backbone_weights(model, pretrained.weights, path, keep_pretraining_modules=False)
        num_layers = len(model.encoder.layers)
        if not 0 <= layer <= num_layers:
            raise CheckpointError(f"{path}: --layer {layer} is out of range; this wav2vec 2.0 has "
                                  f"{num_layers} Transformer layers (use 0 for the projected CNN features)")
        self.model = model.eval()
        self.path = path
        self.layer = int(layer)
        self.dim = int(model.cfg.encoder_embed_dim)
        self.normalize = bool(pretrained.w2v_args.task.get("normalize", False))
        self._torch = torch

    def describe(self) -> Dict[str, Any]:
        return {"extractor": self.kind, **checkpoint_identity(self.path), "layer": self.layer,
                "dim": self.dim, "normalize": self.normalize}

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


def load_extractor(path: str, layer: Optional[int] = None) -> FeatureExtractor:
    """The extractor for checkpoint ``path``: stage-1 frame emotion model, or wav2vec 2.0 at ``layer``."""
    from ..models.pretrained import checkpoint_config, model_name, read_checkpoint

    state = read_checkpoint(path)
    name = model_name(checkpoint_config(state, path))
    del state
    if name == FRAME_EMOTION_MODEL:
        if layer is not None:
            raise CheckpointError(f"{path}: a {FRAME_EMOTION_MODEL!r} model has one feature output; "
                                  "--layer is only for plain wav2vec 2.0 checkpoints")
        from ..models.ser_frame_emotion import load_frame_extractor

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

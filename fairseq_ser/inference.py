"""Running a trained emotion classifier: loading its checkpoint and scoring audio.

A classifier checkpoint holds everything needed: the backbone's pretraining
config (``w2v_args``), the head's config and the class names. Neither the
original ``w2v_path`` nor the training manifests are read.
"""

import logging
from types import SimpleNamespace
from typing import List, Optional, Sequence

import numpy as np
import torch

from .errors import CheckpointError
from .models.pretrained import checkpoint_config, model_name, read_checkpoint

logger = logging.getLogger(__name__)

CLASSIFIER_MODEL = "ser_wav2vec2_classifier"


class EmotionClassifier:
    """A fine-tuned ``ser_wav2vec2_classifier`` ready for inference."""

    def __init__(self, model, class_names: Sequence[str], device: torch.device, path: str = ""):
        self.model = model.eval().to(device)
        self.class_names = list(class_names)
        self.device = device
        self.path = path

    @classmethod
    def from_checkpoint(cls, path: str, device: Optional[str] = None) -> "EmotionClassifier":
        import fairseq_ser

        fairseq_ser.register()
        from .models.ser_wav2vec2_classifier import SerWav2Vec2Classifier

        state = read_checkpoint(path)
        cfg = checkpoint_config(state, path)
        name = model_name(cfg)
        if name != CLASSIFIER_MODEL:
            raise CheckpointError(
                f"{path}: holds a {name!r} model, not an emotion classifier "
                f"({CLASSIFIER_MODEL}); train one with config/vft.yaml"
            )
        class_names = cfg.model.get("class_names")
        if not class_names:
            raise CheckpointError(f"{path}: classifier checkpoint without class names")
        from fairseq.dataclass.utils import merge_with_parent
        from .models.ser_wav2vec2_classifier import SerWav2Vec2ClassifierConfig

        model_cfg = merge_with_parent(SerWav2Vec2ClassifierConfig(), cfg.model, remove_missing=True)
        model = SerWav2Vec2Classifier.build_model(model_cfg, SimpleNamespace(class_names=list(class_names)))
        try:
            model.load_state_dict(state["model"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not match the stored config ({str(e).splitlines()[0]})")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model, class_names, dev, path)

    @torch.inference_mode()
    def predict_proba(self, waveforms: Sequence[np.ndarray], lengths: Optional[Sequence[int]] = None,
                      max_batch_samples: int = 16000 * 160, progress=None) -> np.ndarray:
        """Class probabilities ``(N, num_classes)`` of 16 kHz mono float waveforms.

        Utterances are sorted by length and batched up to ``max_batch_samples``
        padded samples, so padding stays small; results come back in input order.
        ``waveforms`` may be a lazy sequence (reading files on access) when
        ``lengths`` gives the sample counts up front. ``progress`` is called
        with the number of utterances done after each batch.
        """
        if lengths is None:
            lengths = [len(w) for w in waveforms]
        out = np.zeros((len(lengths), len(self.class_names)), dtype=np.float32)
        for batch in length_batches(lengths, max_batch_samples):
            wavs = [np.asarray(waveforms[i], dtype=np.float32) for i in batch]
            lengths_b = [len(w) for w in wavs]
            source = torch.zeros(len(batch), max(lengths_b))
            padding = torch.ones(len(batch), max(lengths_b), dtype=torch.bool)
            for row, wav in enumerate(wavs):
                source[row, : len(wav)] = torch.from_numpy(wav)
                padding[row, : len(wav)] = False
            logits = self.model(source.to(self.device), padding_mask=padding.to(self.device))
            out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if progress is not None:
                progress(len(batch))
        return out


def length_batches(lengths: Sequence[int], max_batch_samples: int) -> List[List[int]]:
    """Indices grouped by similar length, each group at most ``max_batch_samples`` once padded."""
    order = np.argsort(lengths, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        n = int(lengths[i])
        if current and max(longest, n) * (len(current) + 1) > max_batch_samples:
            batches.append(current)
            current, longest = [], 0
        current.append(int(i))
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches

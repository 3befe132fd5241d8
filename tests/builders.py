"""In-process builders the tests share: tasks, models and criterions from their configs, batches, label files.

Each builds what fairseq's trainer would from a config: the dataclass
defaults merged with the given fields (``merge_with_parent``, as fairseq
does for a yaml's section), then the registered class's ``setup_task`` /
``build_model`` / ``build_criterion``.
"""

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

import fairseq_ser

fairseq_ser.register()


def config(config_cls, **fields):
    """``config_cls``'s defaults merged with ``fields``, as fairseq merges a yaml section (paths as strings)."""
    from fairseq.dataclass.utils import merge_with_parent

    values = {k: str(v) if hasattr(v, "__fspath__") else v for k, v in fields.items()}
    return merge_with_parent(config_cls(), OmegaConf.create(values))


def make_task(data_dir, **overrides):
    """The ser_classification task on a fold folder (under a full FairseqConfig, for its interpolations)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.dataclass.utils import merge_with_parent

    from fairseq_ser.tasks.ser_classification import SerClassificationConfig, SerClassificationTask

    root = OmegaConf.structured(FairseqConfig())
    with open_dict(root):
        root.task = {"_name": "ser_classification", "data": str(data_dir), **overrides}
    return SerClassificationTask.setup_task(merge_with_parent(SerClassificationConfig(), root.task))


def make_pretraining_task(data_dir, **overrides):
    """fairseq's audio_pretraining task on a fold folder (what TAPT trains with)."""
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig, AudioPretrainingTask

    return AudioPretrainingTask.setup_task(config(AudioPretrainingConfig, data=data_dir, tpu=False, seed=1,
                                                  **overrides))


def build_classifier(task, w2v_path, **overrides):
    """V-FT's ser_wav2vec2_classifier on ``w2v_path`` (a task or anything with ``class_names``)."""
    from fairseq_ser.models.ser_wav2vec2_classifier import SerWav2Vec2Classifier, SerWav2Vec2ClassifierConfig

    return SerWav2Vec2Classifier.build_model(config(SerWav2Vec2ClassifierConfig, w2v_path=w2v_path, **overrides),
                                             task)


def build_tapt(task, w2v_path, **overrides):
    """TAPT's ser_wav2vec2_tapt on ``w2v_path``."""
    from fairseq_ser.models.ser_wav2vec2_tapt import SerWav2Vec2Tapt, SerWav2Vec2TaptConfig

    return SerWav2Vec2Tapt.build_model(config(SerWav2Vec2TaptConfig, w2v_path=w2v_path, **overrides), task)


def build_tapt_criterion(task, w2v_path, **settings):
    """TAPT's criterion, reading its defaults from the checkpoint at ``w2v_path``."""
    from fairseq_ser.criterions.ser_wav2vec_tapt import SerWav2VecTaptCriterion, SerWav2VecTaptCriterionConfig

    return SerWav2VecTaptCriterion.build_criterion(
        config(SerWav2VecTaptCriterionConfig, w2v_path=w2v_path, **settings), task)


def build_ptapt(w2v_path, cluster_sizes=(4, 8), **overrides):
    """P-TAPT's ser_wav2vec2_ptapt on ``w2v_path`` with one head per cluster size."""
    from types import SimpleNamespace

    from fairseq_ser.models.ser_wav2vec2_ptapt import SerWav2Vec2Ptapt, SerWav2Vec2PtaptConfig

    return SerWav2Vec2Ptapt.build_model(config(SerWav2Vec2PtaptConfig, w2v_path=w2v_path, **overrides),
                                        SimpleNamespace(cluster_sizes=list(cluster_sizes)))


def build_frame_emotion(task, w2v_path, **overrides):
    """P-TAPT stage 1's ser_frame_emotion model on a wav2vec 1.0 or 2.0 checkpoint."""
    from fairseq_ser.models.ser_frame_emotion import SerFrameEmotionConfig, SerFrameEmotionModel

    return SerFrameEmotionModel.build_model(config(SerFrameEmotionConfig, w2v_path=w2v_path, **overrides), task)


def padding_mask(lengths, longest=None):
    """True where a row of ``lengths`` is padding, over ``longest`` (default: the longest) samples."""
    longest = longest or max(lengths)
    return torch.arange(longest)[None, :] >= torch.tensor(lengths)[:, None]


def padded_batch(lengths, seed=0):
    """Random audio (std 0.1) of ``lengths`` samples, zero-padded, and its padding mask."""
    gen = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    source = torch.randn(len(lengths), longest, generator=gen) * 0.1
    padding = padding_mask(lengths)
    return source.masked_fill(padding, 0.0), padding


def write_random_labels(fold, out, sizes=(4, 8), seed=0):
    """``{split}.km{K}`` files of the right shape for every split of ``fold`` (stand-ins for k-means ids)."""
    from fairseq_ser.data.manifest import read_manifest
    from fairseq_ser.frames import num_frames

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in sizes:
        for split in ("train", "valid", "test"):
            manifest = read_manifest(str(fold / f"{split}.tsv"))
            lines = [" ".join(map(str, rng.integers(0, k, num_frames(n)))) for _, n in manifest.entries]
            (out / f"{split}.km{k}").write_text("\n".join(lines) + "\n")
        (out / f"dict.km{k}.txt").write_text("".join(f"{i} 1\n" for i in range(k)))
    return out

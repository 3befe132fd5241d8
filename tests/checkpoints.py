"""Tiny wav2vec 2.0 checkpoints in the layouts users bring, made with fairseq itself.

The cfg-layout pretraining checkpoint comes from a real fairseq-hydra-train
run of fairseq's audio_pretraining task (see conftest); the others are derived
from it the way fairseq wrote them.
"""

import argparse

import torch


def to_legacy_args_layout(cfg_ckpt: str, out: str, with_meters: bool = True) -> str:
    """Rewrite a cfg-layout pretraining checkpoint in the legacy layout of ``wav2vec_small.pt``.

    The config becomes one flat ``argparse.Namespace`` (``args``) as fairseq
    0.9/0.10 saved it; with ``with_meters``, ``extra_state`` also pickles
    fairseq meter objects, which ``weights_only`` loading refuses.
    """
    state = torch.load(cfg_ckpt, map_location="cpu", weights_only=True)
    cfg = state["cfg"]
    flat = {}
    for section in ("common", "checkpoint", "dataset", "optimization", "task", "model"):
        for key, value in (cfg.get(section) or {}).items():
            if key != "_name":
                flat[key] = value
    args = argparse.Namespace(
        **flat, arch="wav2vec2", task="audio_pretraining", criterion="wav2vec",
        optimizer="adam", lr_scheduler="polynomial_decay",
    )
    extra = {"epoch": 1, "batch_offset": 0, "val_loss": None}
    if with_meters:
        from fairseq.logging.meters import AverageMeter

        meter = AverageMeter()
        meter.update(1.5)
        extra["train_meters"] = {"train_loss": meter}
    legacy = {
        "args": args,
        "model": state["model"],
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 4}],
        "extra_state": extra,
        "last_optimizer_state": None,
    }
    torch.save(legacy, out)
    return out


def make_ctc_finetuned(cfg_ckpt: str, out: str) -> str:
    """A fairseq wav2vec 2.0 CTC model (``wav2vec_ctc``) built on ``cfg_ckpt``, saved as fairseq does."""
    from types import SimpleNamespace

    from fairseq.data import Dictionary
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc
    from fairseq.dataclass.configs import FairseqConfig
    from omegaconf import OmegaConf, open_dict

    letters = Dictionary()
    for c in "abcdefgh|":
        letters.add_symbol(c)
    # the ASR config interpolates task.* and distributed_training.* from its parent
    root = OmegaConf.structured(FairseqConfig())
    with open_dict(root):
        root.task = {"_name": "audio_finetuning", "normalize": False, "data": "."}
        root.model = {"w2v_path": cfg_ckpt}
    cfg = merge_with_parent(Wav2Vec2CtcConfig(), root.model)
    model = Wav2VecCtc.build_model(cfg, SimpleNamespace(target_dictionary=letters))
    full_cfg = {"model": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                "task": OmegaConf.to_container(root.task)}
    full_cfg["model"]["_name"] = "wav2vec_ctc"
    torch.save({"args": None, "cfg": full_cfg, "model": model.state_dict(),
                "optimizer_history": [], "extra_state": {}}, out)
    return out


# A tiny fairseq wav2vec 1.0: the large model's hop (160 samples, 100 Hz) and
# receptive field (465 samples), 32 channels instead of 512.
TINY_WAV2VEC1 = {
    "conv_feature_layers": "[(32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2), (32, 1, 1)]",
    "conv_aggregator_layers": "[(32, 2, 1), (32, 3, 1), (32, 4, 1)]",
    "prediction_steps": 3,
    "num_negatives": 2,
}


def make_wav2vec1(out: str, layout: str = "args", seed: int = 0) -> str:
    """A tiny fairseq ``Wav2VecModel`` (wav2vec 1.0, random weights) saved as fairseq saves it.

    ``layout="args"``: the legacy layout of ``wav2vec_large.pt`` (a flat
    ``argparse.Namespace`` with ``arch="wav2vec"`` and the old task name);
    ``layout="cfg"``: a current fairseq ``cfg``.
    """
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    fields = dict(TINY_WAV2VEC1, infonce=False)
    cfg = merge_with_parent(Wav2VecConfig(), OmegaConf.create(fields))
    model = Wav2VecModel(cfg)
    if layout == "args":
        args = argparse.Namespace(
            **fields, arch="wav2vec", task="speech_pretraining", criterion="binary_cross_entropy",
            optimizer="adam", lr=[1e-5], sample_rate=16000, max_sample_size=150000, seed=1,
            skip_connections_agg=True, residual_scale=0.5, log_compression=True,
        )
        state = {"args": args, "model": model.state_dict(), "optimizer_history": [],
                 "extra_state": {"epoch": 1}, "last_optimizer_state": None}
    elif layout == "cfg":
        model_cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        model_cfg["_name"] = "wav2vec"
        state = {"args": None, "model": model.state_dict(), "optimizer_history": [], "extra_state": {},
                 "cfg": {"model": model_cfg, "task": {"_name": "audio_pretraining", "data": "."},
                         "criterion": {"_name": "wav2vec", "infonce": False}}}
    else:
        raise ValueError(f"layout must be 'args' or 'cfg', not {layout!r}")
    torch.save(state, out)
    return out

"""Tiny wav2vec 2.0 checkpoints in the layouts users bring, made with fairseq itself.

The cfg-layout pretraining checkpoint comes from a real fairseq-hydra-train
run of fairseq's audio_pretraining task (see conftest), or, where training
does not matter, from :func:`make_wav2vec2` (the same model, untrained); the
others are derived from it the way fairseq wrote them over its versions.
"""

import argparse
import contextlib
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parents[1] / "config"


def make_wav2vec2(out: str, seed: int = 0) -> str:
    """config/pretrain_tiny.yaml's wav2vec 2.0, untrained, saved as fairseq 0.12's trainer saves a checkpoint.

    ``cfg`` is the full resolved config as a plain dict (``trainer.state_dict``),
    with the trainer's ``optimizer_history``, ``task_state`` and ``extra_state``.
    """
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
    from omegaconf import OmegaConf, open_dict

    tiny = OmegaConf.load(CONFIG / "pretrain_tiny.yaml")
    model_cfg = merge_with_parent(Wav2Vec2Config(), tiny.model)
    torch.manual_seed(seed)
    model = Wav2Vec2Model(model_cfg)
    root = OmegaConf.structured(FairseqConfig())
    with open_dict(root):
        root.task = merge_with_parent(AudioPretrainingConfig(), OmegaConf.merge(tiny.task, {"data": "."}))
        root.model = model_cfg
        root.criterion = tiny.criterion
    cfg = OmegaConf.to_container(root, resolve=True, enum_to_str=True)
    state = {
        "args": None,
        "cfg": cfg,
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"metrics": {}, "previous_training_time": 0.0, "val_loss": None,
                        "train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True}},
    }
    torch.save(state, out)
    return out


def _legacy_args(cfg: dict, **names) -> argparse.Namespace:
    """A cfg-layout config flattened into one ``argparse.Namespace``, as fairseq <= 0.10 saved ``args``."""
    flat = {}
    for section in ("common", "checkpoint", "dataset", "optimization", "task", "model"):
        for key, value in (cfg.get(section) or {}).items():
            if key != "_name":
                flat[key] = value
    return argparse.Namespace(**{**flat, **names})


def to_legacy_args_layout(cfg_ckpt: str, out: str, with_meters: bool = True, meters: str = "logging") -> str:
    """Rewrite a cfg-layout pretraining checkpoint in the legacy layout of ``wav2vec_small.pt``.

    The config becomes one flat ``argparse.Namespace`` (``args``) as fairseq
    0.9/0.10 saved it; with ``with_meters``, ``extra_state`` also pickles
    fairseq meter objects, which torch's plain ``weights_only`` loading refuses:
    ``meters="logging"`` one ``fairseq.logging.meters.AverageMeter``,
    ``meters="fairseq08"`` the ``train_meters`` of fairseq <= 0.8 (the
    ``wav2vec_large.pt`` era), pickled from the ``fairseq.meters`` module
    fairseq has since removed.
    """
    state = torch.load(cfg_ckpt, map_location="cpu", weights_only=True)
    args = _legacy_args(state["cfg"], arch="wav2vec2", task="audio_pretraining", criterion="wav2vec",
                        optimizer="adam", lr_scheduler="polynomial_decay")
    extra = {"epoch": 1, "batch_offset": 0, "val_loss": None}
    if with_meters and meters == "fairseq08":
        extra["train_meters"] = _fairseq08_meters()
    elif with_meters:
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
    with _fairseq08_meters_module() if with_meters and meters == "fairseq08" else contextlib.nullcontext():
        torch.save(legacy, out)
    return out


class _fairseq08_meters_module:
    """``fairseq.meters`` as fairseq 0.8 had it, present while its meters are pickled by name."""

    def __enter__(self):
        sys.modules["fairseq.meters"] = _FAIRSEQ08_METERS
        return self

    def __exit__(self, *exc):
        del sys.modules["fairseq.meters"]
        return False


def _old_meter(name: str, fields: dict):
    # fairseq 0.8's meters: plain classes whose __init__ / reset set these attributes
    def __init__(self):
        self.__dict__.update(fields)

    cls = type(name, (object,), {"__init__": __init__, "__module__": "fairseq.meters"})
    cls.__qualname__ = name
    return cls


_FAIRSEQ08_METERS = types.ModuleType("fairseq.meters")
for _name, _fields in (("AverageMeter", {"val": 0, "avg": 0, "sum": 0, "count": 0}),
                       ("TimeMeter", {"init": 0, "start": 0.0, "n": 0}),
                       ("StopwatchMeter", {"sum": 0, "n": 0, "start_time": None})):
    setattr(_FAIRSEQ08_METERS, _name, _old_meter(_name, _fields))


def _fairseq08_meters() -> OrderedDict:
    """``Trainer.meters`` of fairseq 0.8 (init_meters), as save_checkpoint put them in ``extra_state``."""
    m = _FAIRSEQ08_METERS
    meters = OrderedDict()
    for key in ("train_loss", "train_nll_loss", "valid_loss", "valid_nll_loss", "wpb", "bsz", "gnorm", "clip", "oom"):
        meters[key] = m.AverageMeter()
    meters["train_loss"].__dict__.update(val=2.5, avg=2.75, sum=11.0, count=4)
    for key in ("wps", "ups", "wall"):
        meters[key] = m.TimeMeter()
    meters["train_wall"] = m.StopwatchMeter()
    return meters


def to_hydra_era_layout(cfg_ckpt: str, out: str, best: float = 1.25) -> str:
    """Rewrite a cfg-layout checkpoint as fairseq 1.0.0a0 (late 2020 on, XLS-R era) saved it.

    checkpoint_utils.save_state stored the config object itself: the
    unstructured, struct-flagged DictConfig that fairseq_cli/hydra_train.py
    re-creates from a resolved container (so AnyNode values, lists as
    ListConfig). The best validation score is an ``np.float64``, as
    fairseq's meters keep it when a task logs numpy values, in
    ``extra_state["best"]`` and the lr scheduler's state.
    """
    import numpy as np
    from omegaconf import OmegaConf

    state = torch.load(cfg_ckpt, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state["cfg"])
    OmegaConf.set_struct(cfg, True)
    state["cfg"] = cfg
    state["extra_state"] = dict(state.get("extra_state") or {}, best=np.float64(best), val_loss=np.float64(best))
    history = state.get("optimizer_history") or [{"criterion_name": "Wav2vecCriterion", "num_updates": 0}]
    history[-1]["lr_scheduler_state"] = {"best": np.float64(best)}
    state["optimizer_history"] = history
    torch.save(state, out)
    return out


def to_legacy_finetuned_layout(cfg_ckpt: str, out: str) -> str:
    """A fairseq 0.10 CTC fine-tuned checkpoint (``wav2vec_small_960h.pt``) on ``cfg_ckpt``'s backbone.

    ``args`` is flat (``arch="wav2vec_ctc"``) and holds the pretraining run's
    own flat ``args`` as ``w2v_args``, as Wav2VecEncoder stored them.
    """
    state = torch.load(cfg_ckpt, map_location="cpu", weights_only=True)
    w2v_args = _legacy_args(state["cfg"], arch="wav2vec2", task="audio_pretraining", criterion="wav2vec",
                            optimizer="adam", lr_scheduler="polynomial_decay")
    args = argparse.Namespace(arch="wav2vec_ctc", task="audio_pretraining", criterion="ctc", optimizer="adam",
                              lr_scheduler="tri_stage", w2v_path="/checkpoint/wav2vec_small.pt",
                              w2v_args=w2v_args, normalize=False, data=".", labels="ltr", apply_mask=True,
                              mask_prob=0.5, feature_grad_mult=0.0, final_dropout=0.0, max_update=20000)
    weights = {f"w2v_encoder.w2v_model.{k}": v for k, v in state["model"].items()}
    dim = state["model"]["encoder.layer_norm.weight"].shape[0]
    weights.update({"w2v_encoder.proj.weight": torch.zeros(32, dim), "w2v_encoder.proj.bias": torch.zeros(32)})
    torch.save({"args": args, "model": weights, "optimizer_history": [
        {"criterion_name": "CtcCriterion", "optimizer_name": "FairseqAdam",
         "lr_scheduler_state": {"best": 0.5}, "num_updates": 20000}],
        "extra_state": {"metrics": {}, "train_iterator": {"epoch": 10}, "val_loss": 0.5},
        "last_optimizer_state": None}, out)
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
    # task_state: fairseq's trainer saves audio_finetuning's target dictionary object there
    torch.save({"args": None, "cfg": full_cfg, "model": model.state_dict(),
                "optimizer_history": [], "task_state": {"target_dictionary": letters}, "extra_state": {}}, out)
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


def make_classifier(w2v_path: str, data_dir: str, out: str, overrides=()) -> str:
    """config/vft.yaml's classifier on ``w2v_path`` for ``data_dir``'s classes, untrained, saved by fairseq's Trainer.

    What ``fairseq-hydra-train --config-name vft`` would save before its first
    update: the config composed by Hydra and resolved as fairseq_cli.hydra_train
    does, the task and model built from it (the model records ``w2v_args`` and
    ``class_names`` in its config), written by ``Trainer.save_checkpoint``.
    """
    from fairseq import tasks
    from fairseq.dataclass.initialize import add_defaults
    from fairseq.trainer import Trainer
    from omegaconf import OmegaConf

    from inprocess import compose, use_imported_package

    cfg = compose(str(CONFIG), "vft", [f"task.data={data_dir}", f"model.w2v_path={w2v_path}",
                                      "common.cpu=true", "common.fp16=false", *overrides])
    use_imported_package(cfg)
    add_defaults(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    # seeded as fairseq_cli.train seeds torch before building: the head's random init must not depend on
    # which tests ran before in this process
    torch.manual_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    trainer.consolidate_optimizer()  # as fairseq's checkpoint_utils.save_checkpoint does first
    trainer.save_checkpoint(out, {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0,
                                                      "shuffle": True}, "val_loss": None})
    return out

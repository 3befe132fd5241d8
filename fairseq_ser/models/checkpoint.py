"""Reading the checkpoints users bring and the ones this package trains: the one module that reads them.

Accepted as a backbone (``model.w2v_path``):

- fairseq wav2vec 2.0 pretraining checkpoints in the current layout (``cfg``)
  and in the legacy layout whose ``args`` is an ``argparse.Namespace`` (as the
  released ``wav2vec_small.pt`` ships);
- fairseq fine-tuned checkpoints (CTC, seq2seq, classification) that carry
  the pretrained model's config in ``w2v_args``;
- this package's own checkpoints (an emotion classifier, TAPT, P-TAPT), whose
  backbone is reused;
- HuggingFace ``transformers`` wav2vec2 folders, converted in memory by
  :mod:`.hf_import` (``fairseq-ser import-hf`` writes the same checkpoint to a file);
- fairseq wav2vec 1.0 checkpoints (P-TAPT step 1), read by :func:`load_wav2vec1`.

Files are unpickled by :mod:`.safe_load`. A backbone becomes a
:class:`PretrainedBackbone`: the full config it was pretrained with (kept as
``w2v_args`` inside fine-tuned models so they load without the original file)
and its weights, keyed as in fairseq's ``Wav2Vec2Model``.
:func:`load_trained` loads a model this package trained, on its own.
:mod:`.backbone` builds models from what is read here.
"""

import argparse
import dataclasses
import os
import warnings
import zipfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import CheckpointError, first_line
from .safe_load import load_checkpoint_file
from .weights import check_materialized, check_weights_fit, weights_on_meta

# model name -> prefix of the wav2vec 2.0 weights inside that model's state dict
BACKBONE_PREFIXES = {
    "wav2vec2": "",
    "wav2vec_ctc": "w2v_encoder.w2v_model.",
    "wav2vec_seq2seq": "encoder.w2v_model.",
    "wav2vec_classification": "w2v_encoder.w2v_model.",
    "ser_wav2vec2_classifier": "backbone.",
    "ser_wav2vec2_ptapt": "backbone.",
    "ser_wav2vec2_tapt": "w2v_model.",
}

# model names of fairseq wav2vec 1.0 ("audio_cpc": its name before fairseq 0.9)
WAV2VEC1_MODELS = ("wav2vec", "audio_cpc")

# models of this package that load on their own (load_trained): what they are, and the
# config that trains one, for the message when a checkpoint holds another model
TRAINED_MODELS = {
    "ser_wav2vec2_classifier": ("an emotion classifier", "config/vft.yaml"),
    "ser_frame_emotion": ("a frame-level emotion model", "config/ptapt_stage1.yaml"),
}


@dataclass
class PretrainedBackbone:
    path: str
    w2v_args: DictConfig  # full config of the wav2vec 2.0 pretraining run (model, task, ...)
    weights: Dict[str, torch.Tensor]  # Wav2Vec2Model state dict, pretraining modules included if present
    source_model: str  # the ``_name`` of the model stored in the checkpoint
    # criterion config of the self-supervised pretraining run (loss weights, infonce),
    # None when the checkpoint does not record it
    criterion: Optional[DictConfig] = None

    @property
    def has_pretraining_modules(self) -> bool:
        return any(k.startswith("quantizer.") for k in self.weights)


@dataclass
class PretrainedWav2Vec1:
    path: str
    w2v_args: DictConfig  # {"model": Wav2VecConfig fields with _name "wav2vec", "task": {...}}
    weights: Dict[str, torch.Tensor]  # fairseq Wav2VecModel state dict
    source_model: str = "wav2vec"


def read_checkpoint(path: str, mmap: bool = False) -> Dict[str, Any]:
    """Load a fairseq checkpoint onto the CPU, legacy layouts included (or convert a HuggingFace folder).

    The file is read by :func:`.safe_load.load_checkpoint_file`: with
    ``weights_only`` unpickling and the classes released fairseq checkpoints
    pickle (legacy ``argparse.Namespace`` args, old meters, configs); anything
    else is refused unless the user opts in with ``FAIRSEQ_SER_TRUST_CHECKPOINTS=1``.
    ``mmap``: its tensors are mapped from the file, not read (see there).
    """
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.isdir(path):
        from .hf_import import convert_hf_folder, is_hf_folder

        if is_hf_folder(path):
            # a HuggingFace wav2vec2 folder, converted in memory as `fairseq-ser import-hf` would
            return convert_hf_folder(path).state
        raise CheckpointError(f"{path}: is a folder, expected a fairseq checkpoint file (.pt) or a "
                              "HuggingFace wav2vec2 folder (config.json and model weights)")
    state = load_checkpoint_file(path, mmap=mmap)
    if "model" not in state:
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' weights in it)")
    return state


def checkpoint_config(state: Dict[str, Any], path: str) -> DictConfig:
    """The checkpoint's full config as a DictConfig, converting a legacy ``args`` namespace."""
    cfg = state.get("cfg")
    if cfg is not None:
        return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg, flags={"allow_objects": True})
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        return _namespace_to_config(args, path)
    raise CheckpointError(f"{path}: checkpoint has neither 'cfg' nor 'args'; cannot tell what model it holds")


def _namespace_to_config(args: argparse.Namespace, path: str) -> DictConfig:
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    inner = getattr(args, "w2v_args", None)
    if isinstance(inner, argparse.Namespace):
        # fairseq 0.10 fine-tuned checkpoints (wav2vec_small_960h.pt) nest the pretraining
        # run's flat args; fairseq's converter cannot override the nested config, so the
        # two are converted one at a time
        outer = _namespace_to_config(argparse.Namespace(**{k: v for k, v in vars(args).items()
                                                            if k != "w2v_args"}), path)
        with open_dict(outer):
            outer.model.w2v_args = _namespace_to_config(inner, path)
        return outer
    try:
        # fairseq converts through Hydra's compose API, which warns about its own deprecations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_namespace_to_omegaconf(args)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot convert the legacy 'args' of this checkpoint ({first_line(e)})")


def model_name(cfg: DictConfig) -> Optional[str]:
    model_cfg = cfg.get("model") if cfg is not None else None
    if model_cfg is None:
        return None
    return model_cfg.get("_name", None) or model_cfg.get("arch", None)


def stored_model_name(state: Dict[str, Any], path: str) -> Optional[str]:
    """Name of the model a checkpoint read by :func:`read_checkpoint` holds, without converting legacy args."""
    if state.get("cfg") is not None:
        return model_name(checkpoint_config(state, path))
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        return getattr(args, "arch", None)
    raise CheckpointError(f"{path}: checkpoint has neither 'cfg' nor 'args'; cannot tell what model it holds")


def input_normalize(w2v_args) -> bool:
    """Whether the backbone was pretrained on normalised waveforms (its ``task.normalize``; absent: no)."""
    task = w2v_args.get("task", None) if w2v_args is not None else None
    return bool(task.get("normalize", False)) if task is not None else False


def is_wav2vec1(w2v_args) -> bool:
    """Whether a backbone config (``w2v_args``) describes a fairseq wav2vec 1.0."""
    return w2v_args.model.get("_name") in WAV2VEC1_MODELS


def load_backbone(path: str, state: Optional[Dict[str, Any]] = None) -> PretrainedBackbone:
    """Read any accepted checkpoint and return its wav2vec 2.0 backbone config and weights.

    ``state``: the checkpoint already read by :func:`read_checkpoint`.
    """
    state = read_checkpoint(path) if state is None else state
    cfg = checkpoint_config(state, path)
    name = model_name(cfg)
    if name not in BACKBONE_PREFIXES:
        known = ", ".join(sorted(BACKBONE_PREFIXES))
        raise CheckpointError(
            f"{path}: holds a {name!r} model, not a wav2vec 2.0 model (accepted: {known})"
        )
    if BACKBONE_PREFIXES[name] == "":
        w2v_args = cfg
    else:
        w2v_args = cfg.model.get("w2v_args", None)
        if isinstance(w2v_args, argparse.Namespace):
            w2v_args = _namespace_to_config(w2v_args, path)
        elif isinstance(w2v_args, dict):
            w2v_args = OmegaConf.create(w2v_args)
        if w2v_args is None:
            raise CheckpointError(f"{path}: fine-tuned {name!r} checkpoint without 'w2v_args'; "
                                  "cannot rebuild its wav2vec 2.0 backbone")
        inner = model_name(w2v_args)
        if inner != "wav2vec2":
            raise CheckpointError(f"{path}: its backbone is a {inner!r} model, not wav2vec2")
    prefix = BACKBONE_PREFIXES[name]
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path}: no weights under {prefix!r} in this {name!r} checkpoint")
    criterion = w2v_args.get("criterion", None)
    if criterion is not None:
        # detached copy: the node is removed from w2v_args just below
        criterion = OmegaConf.create(OmegaConf.to_container(criterion, resolve=True))
    with open_dict(w2v_args):
        # the training objective of the pretraining run has no meaning for fine-tuning;
        # it is kept apart for continued pretraining (TAPT)
        w2v_args.criterion = None
        w2v_args.lr_scheduler = None
    return PretrainedBackbone(path=path, w2v_args=w2v_args, weights=weights, source_model=name,
                              criterion=criterion)


def load_wav2vec1(path: str, state: Optional[Dict[str, Any]] = None) -> PretrainedWav2Vec1:
    """Config and weights of a fairseq wav2vec 1.0 checkpoint (``wav2vec_large.pt``: legacy ``args``; or ``cfg``).

    Only the model's own fields are kept (legacy ``args`` mix every option of
    the run, and old ones name tasks fairseq no longer registers).
    ``state``: the checkpoint already read by :func:`read_checkpoint`.
    """
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig

    state = read_checkpoint(path) if state is None else state
    name = stored_model_name(state, path)
    if name not in WAV2VEC1_MODELS:
        raise CheckpointError(f"{path}: holds a {name!r} model, not a fairseq wav2vec 1.0 model (arch 'wav2vec')")
    if state.get("cfg") is not None:
        stored = OmegaConf.to_container(checkpoint_config(state, path).model, resolve=False)
    else:
        stored = vars(state["args"])
    fields = {f.name: stored[f.name] for f in dataclasses.fields(Wav2VecConfig)
              if f.name in stored and f.name != "infonce"}
    # infonce only shapes the contrastive loss, which is not used downstream
    fields.update(_name="wav2vec", infonce=False)
    if isinstance(fields.get("vq_temp"), tuple):
        fields["vq_temp"] = list(fields["vq_temp"])
    w2v_args = OmegaConf.create({"model": fields,
                                 "task": {"_name": "audio_pretraining", "normalize": False, "sample_rate": 16000}})
    return PretrainedWav2Vec1(path=path, w2v_args=w2v_args, weights=dict(state["model"]))


def load_wav2vec1_or_2(path: str) -> Union[PretrainedWav2Vec1, PretrainedBackbone]:
    """The wav2vec 1.0 or 2.0 backbone of a checkpoint (P-TAPT step 1 starts from either)."""
    state = read_checkpoint(path)
    name = stored_model_name(state, path)
    if name in WAV2VEC1_MODELS:
        return load_wav2vec1(path, state)
    if name in BACKBONE_PREFIXES:
        return load_backbone(path, state)
    raise CheckpointError(f"{path}: holds a {name!r} model; stage 1 starts from a wav2vec 1.0 (wav2vec) "
                          f"or wav2vec 2.0 ({', '.join(sorted(BACKBONE_PREFIXES))}) checkpoint")


def load_trained(path: str, expected_model: str):
    """Build the ``expected_model`` a checkpoint of this package holds and load its weights strictly.

    The checkpoint is enough: its stored model config (merged into the
    registered dataclass, so fields added since keep their defaults) holds the
    backbone's config (``w2v_args``) and the class names. Returns the model on
    the CPU, in training mode as built; its config is ``model.cfg``.

    Memory: the model is built without weights (:func:`.weights.weights_on_meta`)
    and takes the stored tensors as its own (``assign``), so loading holds one
    copy of the weights; an optimizer state in the file is never read
    (:func:`_own_model_weights`).
    """
    import fairseq_ser
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models import MODEL_DATACLASS_REGISTRY, MODEL_REGISTRY


    fairseq_ser.register()
    state = read_checkpoint(path, mmap=True)
    name = stored_model_name(state, path)
    if name != expected_model:
        what, config = TRAINED_MODELS[expected_model]
        raise CheckpointError(f"{path}: holds a {name!r} model, not {what} ({expected_model}); "
                              f"train one with {config}")
    stored = checkpoint_config(state, path).model
    if not stored.get("class_names") or stored.get("w2v_args") is None:
        raise CheckpointError(f"{path}: {expected_model} checkpoint without its backbone config or class names")
    cfg = merge_with_parent(MODEL_DATACLASS_REGISTRY[expected_model](), stored, remove_missing=True)
    with warnings.catch_warnings(), weights_on_meta():
        # fairseq's positional convolution uses torch's deprecated weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated")
        model = MODEL_REGISTRY[expected_model].build_model(cfg, SimpleNamespace(class_names=list(cfg.class_names)))
    weights = _own_model_weights(path, state)
    del state  # the file's map, if any, goes with it
    model.upgrade_state_dict(weights)  # as fairseq's BaseFairseqModel.load_state_dict does first
    expected = model.state_dict()
    check_weights_fit(expected, weights, path)
    for key, value in weights.items():
        # assign keeps a tensor's dtype: weights stored in fp16 (fairseq --fp16 saves the
        # half-precision model) become the float32 the model is built in, as a copy would make them
        if value.is_floating_point() and value.dtype != expected[key].dtype:
            weights[key] = value.to(expected[key].dtype)
    # torch's own load_state_dict: fairseq's override does not pass assign on
    torch.nn.Module.load_state_dict(model, weights, strict=True, assign=True)
    check_materialized(model, path)
    return model


def _own_model_weights(path: str, state: Dict[str, Any]) -> Dict[str, Any]:
    """The model weights of a checkpoint read with ``mmap``, in memory of their own.

    Not the file's map: fairseq overwrites ``checkpoint_best.pt`` in place
    (a copy), which would change or crash a model running on the mapped
    weights. A file that holds nothing but the model is read again, whole (one
    copy of the weights, no random ones beside them); from a training
    checkpoint only the model's tensors are copied out of the map, so its
    optimizer state is never read.
    """
    weights = state["model"]
    if not zipfile.is_zipfile(path):
        return dict(weights)  # a HuggingFace folder or a legacy-format file: read whole already
    if _tensor_bytes(state) <= _tensor_bytes(weights):
        return dict(read_checkpoint(path)["model"])
    return {k: v.clone() for k, v in weights.items()}


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in nested dicts, lists and tuples."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0

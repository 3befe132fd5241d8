"""Reading the weight files of a HuggingFace model folder, without ``transformers``.

A folder holds ``model.safetensors`` or ``pytorch_model.bin``, or shards of
either listed by ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``.

``.safetensors`` files are read by the ``safetensors`` package (memory-mapped;
it validates the header and the byte ranges). ``pytorch_model.bin`` is a torch
pickle of tensors, read by :func:`.safe_load.load_checkpoint_file`
(``weights_only`` unpickling).
"""

import json
import os
from typing import Dict, List

import safetensors
import torch

from ..errors import CheckpointError
from .safe_load import load_checkpoint_file

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack")


def weight_files(folder: str) -> List[str]:
    """The weight files of a HuggingFace model folder: safetensors first, else pytorch_model.bin."""
    for single in (SAFETENSORS, PYTORCH_BIN):
        path = os.path.join(folder, single)
        if os.path.isfile(path):
            return [path]
        index = path + ".index.json"
        if os.path.isfile(index):
            return _sharded_files(folder, index)
    others = [name for name in OTHER_FRAMEWORKS if os.path.isfile(os.path.join(folder, name))]
    hint = (f" ({', '.join(others)} found: TensorFlow / Flax weights are not read here; resave the model "
            "with transformers' save_pretrained from PyTorch)") if others else ""
    raise CheckpointError(f"{folder}: no model weights ({SAFETENSORS}, {PYTORCH_BIN}, or a sharded "
                          f"index of either){hint}")


def _sharded_files(folder: str, index: str) -> List[str]:
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a HuggingFace weight index ({e})")
    paths = [os.path.join(folder, shard) for shard in shards]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CheckpointError(f"{index}: lists shard {missing[0]}, which does not exist")
    return paths


def read_weights(paths: List[str]) -> Dict[str, torch.Tensor]:
    """All tensors of the given files; floating-point ones as float32, all on the CPU."""
    weights: Dict[str, torch.Tensor] = {}
    for path in paths:
        part = read_safetensors(path) if path.endswith(".safetensors") else read_torch_bin(path)
        weights.update(part)
    return weights


def read_torch_bin(path: str) -> Dict[str, torch.Tensor]:
    # the one safe loader of user files: a pickle beyond tensors is refused (or, with the
    # user's opt-in, loaded), with the same message and switch as fairseq checkpoints
    state = load_checkpoint_file(path)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a PyTorch state dict (expected a mapping of names to tensors)")
    return {name: _as_float32(t) for name, t in state.items()}


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; floating-point ones (e.g. F16, BF16) as float32."""
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            # the library memory-maps the file; each tensor is copied out of the mapping, so
            # that a file replaced or truncated later cannot crash the process (SIGBUS)
            return {name: _as_float32(f.get_tensor(name), copy=True) for name in f.keys()}
    except safetensors.SafetensorError as e:
        # the library says what is wrong ("header too large", "incomplete metadata, file
        # not fully covered", ...) but not which file
        raise CheckpointError(f"{path}: not a safetensors file, or a truncated or damaged one ({e})")


def _as_float32(t: torch.Tensor, copy: bool = False) -> torch.Tensor:
    return t.to(torch.float32, copy=copy) if t.is_floating_point() else (t.clone() if copy else t)

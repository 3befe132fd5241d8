"""Reading the weight files of a HuggingFace model folder, without ``transformers`` or ``safetensors``.

A folder holds ``model.safetensors`` or ``pytorch_model.bin``, or shards of
either listed by ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``.

The safetensors format is small enough to read directly: an 8-byte
little-endian header length N, N bytes of JSON mapping each tensor name to its
``dtype``, ``shape`` and ``data_offsets`` (a byte range counted from the end of
the header; an optional ``__metadata__`` entry holds strings), then the raw
little-endian data. ``pytorch_model.bin`` is a torch pickle of tensors, read
by :func:`.safe_load.load_checkpoint_file` (``weights_only`` unpickling).
"""

import json
import os
import struct
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..errors import CheckpointError
from .safe_load import load_checkpoint_file

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack")

# safetensors dtype -> how its bytes are stored (BF16 is read as raw 16-bit words)
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


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
    """All tensors of the given files, as float32 CPU tensors."""
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


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (F64, F32, F16 and BF16), converted to float32."""
    size = os.path.getsize(path)
    header, data_start = _safetensors_header(path, size)
    data_size = size - data_start
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start) if data_size > 0 else np.zeros(0, np.uint8)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _entry(path, name, entry, data_size)
        raw = data[begin:end].view(dtype)
        if dtype == _DTYPES["BF16"]:
            # bfloat16 is the upper half of a float32
            values = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            values = raw.astype(np.float32)  # a copy in native byte order
        tensors[name] = torch.from_numpy(values.reshape(shape))
    del data
    return tensors


def _safetensors_header(path: str, size: int) -> Tuple[dict, int]:
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise CheckpointError(f"{path}: not a safetensors file (header of {length} bytes in a file of {size})")
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: {e})")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, 8 + length


def _entry(path: str, name: str, entry, data_size: int):
    try:
        dtype_name, shape, offsets = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
        begin, end = int(offsets[0]), int(offsets[1])
    except (TypeError, KeyError, ValueError, IndexError):
        raise CheckpointError(f"{path}: malformed safetensors entry for {name!r}: {entry!r}")
    if dtype_name not in _DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype_name}; only "
                              f"{', '.join(_DTYPES)} weights are supported")
    dtype = _DTYPES[dtype_name]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not 0 <= begin <= end <= data_size or end - begin != expected:
        raise CheckpointError(f"{path}: tensor {name!r} ({dtype_name} {shape}) has byte range [{begin}, {end}) "
                              f"that does not fit its size or the file (truncated?)")
    return dtype, shape, (begin, end)

"""Reading checkpoint files users bring without running code from them.

A ``.pt`` file is a pickle: loaded with full unpickling it can call any
function it names. Every ``torch.load`` of a user-supplied file goes through
:func:`load_checkpoint_file`, which loads with ``weights_only=True`` (tensors,
containers and numbers, plus the classes of :func:`allowed_globals`, which
released fairseq checkpoints really pickle) and refuses anything else with a
:class:`CheckpointError` naming the file and the offending globals.

A file the user trusts can still be loaded with full unpickling by setting
``FAIRSEQ_SER_TRUST_CHECKPOINTS=1``: an environment variable rather than a
flag, because ``fairseq-hydra-train`` reads ``model.w2v_path`` and has no
place for a flag of ours.
"""

import argparse
import collections
import logging
import os
import pickle
import re
import typing
import zipfile
from typing import Any, Dict, List

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

TRUST_ENV = "FAIRSEQ_SER_TRUST_CHECKPOINTS"
# the values torch itself accepts for its TORCH_FORCE_*_WEIGHTS_ONLY_LOAD switches
_TRUE_VALUES = ("1", "y", "yes", "true")

# torch's names for globals its weights-only unpickler refuses
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")


def trust_requested() -> bool:
    """Whether the user opted in to full unpickling of checkpoints that safe loading refuses."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in _TRUE_VALUES


def load_checkpoint_file(path: str, mmap: bool = False) -> Dict[str, Any]:
    """``torch.load`` a user-supplied checkpoint file onto the CPU without running code from it.

    Loads with ``weights_only=True`` and the classes of :func:`allowed_globals`.
    A file that needs anything else is refused with a :class:`CheckpointError`
    naming it, the offending globals and the opt-in; with
    ``FAIRSEQ_SER_TRUST_CHECKPOINTS=1`` it is loaded with full unpickling
    instead, and a warning names the file.

    ``mmap``: map the tensors of a zip-format file (what ``torch.save`` has
    written since torch 1.6) instead of reading them, so that tensors nobody
    touches (an optimizer state) take no memory, and a model can use the mapped
    weights as they are; legacy files are read whole. What is unpickled is the
    same either way.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found" if not os.path.exists(path)
                              else f"{path}: not a file")
    mmap = mmap and zipfile.is_zipfile(path)
    refused = None
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            if not _is_torch_file(path):
                raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_reason(e)})")
            refused = _offending_globals(path, e)
        except Exception as e:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_reason(e)})")
    if refused is not None:
        if not trust_requested():
            raise CheckpointError(
                f"{path}: refused to load: it pickles {refused}; safe loading (torch.load with "
                f"weights_only=True) takes only tensors, plain containers and the classes released "
                f"fairseq checkpoints hold, because unpickling anything else can run arbitrary code. "
                f"If you trust this file, set {TRUST_ENV}=1 to load it with full unpickling")
        logger.warning("%s: loading with full unpickling because %s is set (the file pickles %s); "
                       "this runs whatever code the file holds", path, TRUST_ENV, refused)
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot load checkpoint ({_reason(e)})")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dictionary")
    return state


def allowed_globals() -> List[tuple]:
    """The classes and functions, beyond torch's defaults, that released fairseq checkpoints pickle.

    Each entry is ``(object, name in the pickle)``. What allowing one means,
    in torch's weights-only unpickler: the object is pushed when the pickle
    names it; a class may be called (``REDUCE``) or ``cls.__new__``-ed
    (``NEWOBJ``) with arguments that are themselves only primitives, tensors,
    containers or other allowed objects; an instance of an allowed class gets
    its state through its own ``__setstate__`` or a plain ``__dict__`` update.
    No allowed entry calls, imports or evaluates anything its arguments name,
    so none of them lets a file reach a function that is not on this list.
    """
    from fairseq.data.dictionary import Dictionary
    from fairseq.logging import meters
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    allowed = [
        # the flat `args` of legacy checkpoints (wav2vec_small.pt, wav2vec_large.pt) and the
        # `w2v_args` inside fine-tuned ones; no __setstate__, so state only sets attributes
        (argparse.Namespace, "argparse.Namespace"),
        # `task_state.target_dictionary` of fine-tuned (audio_finetuning, audio_classification)
        # checkpoints; keyword-only __init__ that only fills lists, state is a __dict__ update
        (Dictionary, "fairseq.data.dictionary.Dictionary"),
    ]
    # `extra_state["train_meters"]` of fairseq <= 0.8 checkpoints (wav2vec_large.pt era), saved from
    # `fairseq.meters`, a module fairseq has since moved to fairseq.logging.meters (so even full
    # unpickling fails on them now). Meters hold numbers; __init__ only zeroes them, no __setstate__.
    for name in ("AverageMeter", "TimeMeter", "StopwatchMeter"):
        cls = getattr(meters, name)
        allowed += [(cls, f"fairseq.logging.meters.{name}"), (cls, f"fairseq.meters.{name}")]
    # `cfg` of fairseq 1.0.0a0-era checkpoints (late 2020 to 2021: save_state pickled the config
    # itself), an unstructured DictConfig (fairseq_cli/hydra_train.py re-creates the config from a
    # resolved container), so its nodes are AnyNodes and its metadata names only these types.
    # Their __setstate__ (Node, BaseContainer) updates __dict__ and normalises the metadata's
    # types; __init__ only wraps values into nodes. Interpolations in a config resolve through
    # registered resolvers only, none of which runs code (the same holds for a plain dict cfg,
    # which checkpoint_config turns into a DictConfig anyway).
    allowed += [
        (DictConfig, "omegaconf.dictconfig.DictConfig"),
        (ListConfig, "omegaconf.listconfig.ListConfig"),
        (ContainerMetadata, "omegaconf.base.ContainerMetadata"),
        (Metadata, "omegaconf.base.Metadata"),
        (AnyNode, "omegaconf.nodes.AnyNode"),
        # the metadata's ref_type / key_type / element_type / object_type: typing.Any cannot be
        # called; dict, list and int build plain values
        (typing.Any, "typing.Any"),
        (dict, "builtins.dict"),
        (list, "builtins.list"),
        (int, "builtins.int"),
        # Metadata.resolver_cache, a defaultdict(dict); its factory can only be an allowed object
        (collections.defaultdict, "collections.defaultdict"),
    ]
    # numpy scalars (an np.float64 best validation score in extra_state / lr_scheduler_state, kept
    # by fairseq's meters when a task logs numpy values): guarded stand-ins, not numpy's own
    # functions, so that only plain numeric scalars come out (no object dtypes, no arrays)
    for name in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
        allowed.append((_numpy_scalar, name))
    allowed += [(_numpy_dtype, "numpy.dtype"), (_NumpyDtype, f"{__name__}._NumpyDtype")]
    return allowed


class _NumpyDtype:
    """What a pickled ``numpy.dtype`` loads as: its type code and byte order, checked, never numpy's state."""

    def __init__(self, code):
        self.code = _plain_numeric(code)
        self.byteorder = "="

    def __setstate__(self, state):
        # numpy's state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if (not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "=", "|")
                or any(part is not None for part in state[2:5])):
            raise pickle.UnpicklingError(f"numpy dtype with unsupported state {state!r}")
        self.byteorder = state[1]

    def numpy(self):
        import numpy as np

        # checked again: the pickle may have made this object without __init__ (NEWOBJ)
        dtype = np.dtype(_plain_numeric(getattr(self, "code", None)))
        return dtype.newbyteorder(self.byteorder) if getattr(self, "byteorder", "=") in ("<", ">") else dtype


def _plain_numeric(code) -> str:
    import numpy as np

    if not isinstance(code, str) or not re.fullmatch(r"[biufc]\d{1,2}", code):
        raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain numeric type")
    try:
        np.dtype(code)
    except TypeError:
        raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain numeric type")
    return code


def _numpy_dtype(code, align=False, copy=True) -> _NumpyDtype:
    # numpy pickles a dtype as numpy.dtype(code, align, copy) and then its state
    return _NumpyDtype(code)


def _numpy_scalar(dtype, data):
    import numpy as np

    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an unsupported kind")
    resolved = dtype.numpy()
    if len(data) != resolved.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of {len(data)} bytes for dtype {resolved}")
    return np.frombuffer(data, dtype=resolved)[0]


def _is_torch_file(path: str) -> bool:
    """A file torch.save wrote: a zip archive, or the legacy format's pickled magic number."""
    if zipfile.is_zipfile(path):
        return True
    magic = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _offending_globals(path: str, error: BaseException) -> str:
    """The globals the file pickles that safe loading refuses, as listed from the pickle or torch's message."""
    names: List[str] = []
    try:
        # a static scan of the zip format's pickle: every refused global, not just the first;
        # run inside the safe_globals context, so allowed ones are left out
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as e:  # legacy format, or opcodes the scan does not know
        logger.debug("%s: cannot list the globals of this checkpoint: %s", path, e)
    if not names:
        names = sorted(set(_REFUSED_GLOBAL.findall(str(error))))
    if names:
        return ", ".join(names)
    return f"content torch's weights-only unpickler cannot read ({_reason(error)})"


def _reason(error: BaseException) -> str:
    """The informative line of an exception; for torch's weights-only failures, its unpickler's own reason."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if rest:
            return rest[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


"""Model weights from a checkpoint: checking that they fit, and building a model that takes them as its own.

:func:`weights_on_meta` builds a model without weights (no memory, no random
initialisation), :func:`check_weights_fit` compares a state dict with the
model's before it is loaded (``assign=True``), and :func:`check_materialized`
makes sure nothing of the model was left without a stored weight.
"""

import contextlib
from typing import Dict

import torch
from torch.overrides import TorchFunctionMode

from ..errors import CheckpointError, preview


@contextlib.contextmanager
def weights_on_meta():
    """Build models inside this block with weights on the meta device: no memory, no random initialisation.

    For a model whose weights all come from a checkpoint (``load_state_dict(...,
    assign=True)``), so that loading holds one copy of the weights, not the
    random ones and the stored ones at once. Check the model afterwards with
    :func:`check_materialized`.
    """
    with torch.device("meta"), _MetaInitialisation():
        yield


class _MetaInitialisation(TorchFunctionMode):
    """On meta tensors, the initialisation steps fairseq's modules take return at once.

    fairseq's ``init_bert_params`` draws its normal weights on a CPU copy of
    each tensor (``data.cpu().normal_()``), which a meta tensor cannot give;
    and torch computes ``normal_`` and weight norm (``norm_except_dim``,
    ``_weight_norm``) on meta tensors through Python decompositions that import
    ``torch._dynamo`` (seconds of start-up). What they would compute is
    replaced by the checkpoint's weights anyway; shapes stay right.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes its tensor by name
        if isinstance(first, torch.Tensor) and first.is_meta:
            if func in (torch.Tensor.normal_, torch.nn.init.normal_, torch.Tensor.cpu):
                return first
            if func is torch._weight_norm:  # (g / ||v||) * v, shaped as v
                return torch.empty_like(first)
            if func is torch.norm_except_dim:  # ||v|| over every dimension but dim
                dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
                shape = [1] * first.dim()
                if dim == -1:
                    shape = []
                else:
                    shape[dim] = first.size(dim)
                return torch.empty(shape, dtype=first.dtype, device="meta")
        return func(*args, **kwargs)


def check_materialized(model, path: str) -> None:
    """After a :func:`weights_on_meta` build and the checkpoint's weights: nothing left on the meta device.

    The weights of fairseq's weight-normed positional convolution are
    recomputed from the loaded ``weight_g`` and ``weight_v`` (torch does so
    before every forward; doing it now leaves no meta tensor on the module).
    """
    from torch.nn.utils.weight_norm import WeightNorm

    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                setattr(module, hook.name, hook.compute_weight(module))
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: the checkpoint does not hold {preview(left)} of the model it describes")


def check_weights_fit(expected: Dict[str, torch.Tensor], weights: Dict[str, torch.Tensor], path: str) -> None:
    """A CheckpointError naming the file and the weights when ``weights`` lack, add or mis-shape any of ``expected``."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {preview(unexpected)}")
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: " + "; ".join(parts))
    mismatched = [k for k in expected if tuple(expected[k].shape) != tuple(weights[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(f"{path}: weight {k} has shape {tuple(weights[k].shape)}, "
                              f"the model expects {tuple(expected[k].shape)}")

"""Keeping what a model's build_model fills in (backbone config, class lists) in its checkpoint."""

from omegaconf import open_dict


def copy_built_fields(model_cfg, model, names):
    """Copy ``names`` from ``model.cfg`` back into ``model_cfg``.

    fairseq builds a model from a merged copy of ``cfg.model`` but saves the
    original in checkpoints; fields that build_model fills in (``w2v_args``,
    class names, cluster sizes) must be copied back so that the checkpoint
    loads on its own.
    """
    built = getattr(model, "cfg", None)
    if built is None:
        return
    with open_dict(model_cfg):
        for name in names:
            if name in built:
                model_cfg[name] = built[name]

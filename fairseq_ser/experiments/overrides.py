"""Hydra overrides passed through to the training stages of an experiment.

A plain ``key=value`` goes to every ``fairseq-hydra-train`` stage; ``STAGE:key=value``
(``vft:model.pooling=attentive_stats``) goes to that stage only, which is how
keys that only one yaml holds are set (Hydra rejects a key its yaml lacks).
Later overrides of a key win over earlier ones (Hydra's rule), so a stage-scoped
value beats a plain one. Overrides are passed as written, never rewritten;
only the keys the experiment sets itself (paths, seeds, cluster sizes) are
refused, with the option to use instead.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from ..errors import SerError

# the fairseq-hydra-train stages, named after their yaml in config/
TRAINING_STAGES = ("vft", "tapt", "ptapt_stage1", "ptapt")

# keys set per stage by the experiment, and the option that sets them
RESERVED = {
    "task.data": "--manifests",
    "model.w2v_path": "--checkpoint (P-TAPT stage 1: --stage1-checkpoint)",
    "checkpoint.save_dir": "--out",
    "common.seed": "--seed",
    "common.user_dir": "the installed fairseq_ser package",
    "task.label_dir": "the fold's pseudo_labels folder",
    "task.cluster_labels": "--ks",
}


def override_key(override: str) -> str:
    """The config key of a Hydra override (``+a.b=1`` -> ``a.b``, ``~a.b`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class Overrides:
    """Overrides for every training stage (``common``) and for single stages (``scoped``)."""

    common: List[str] = field(default_factory=list)
    scoped: Dict[str, List[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: Sequence[str]) -> "Overrides":
        out = cls()
        for item in items:
            stage, override = _split_scope(item)
            key = override_key(override)
            if "=" not in override and not override.startswith("~"):
                raise SerError(f"override {item!r}: expected key=value (a Hydra override)")
            if key in RESERVED:
                raise SerError(f"override {item!r}: {key} is set for each stage by the experiment; "
                               f"use {RESERVED[key]}")
            if stage is None:
                out.common.append(override)
            else:
                out.scoped.setdefault(stage, []).append(override)
        return out

    def for_stage(self, stage: str) -> List[str]:
        """The overrides of ``stage``: the common ones, then its own (which win)."""
        return list(self.common) + list(self.scoped.get(stage, []))


def _split_scope(item: str):
    """``'vft:a.b=c'`` -> ``('vft', 'a.b=c')``; ``'a.b=c:d'`` -> ``(None, 'a.b=c:d')``."""
    head = item.split("=", 1)[0]
    if ":" not in head:
        return None, item
    stage, rest = item.split(":", 1)
    if stage not in TRAINING_STAGES:
        raise SerError(f"override {item!r}: unknown stage {stage!r} (stages: {', '.join(TRAINING_STAGES)})")
    return stage, rest

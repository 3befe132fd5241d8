"""``ser_warmup_hold_linear``: the TAPT / P-TAPT schedule of the paper's code.

Linear warm-up for ``warmup_updates`` (or a ``warmup_ratio`` share of all
updates: P-TAPT stage 1), the peak rate for a ``hold_ratio`` share of all
updates, then linear decay to 0 at ``max_update``. (fairseq's ``tri_stage``
decays exponentially and cannot reach 0.)
"""

from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II


@dataclass
class WarmupHoldLinearConfig(FairseqDataclass):
    warmup_updates: int = field(
        default=100, metadata={"help": "updates of linear warm-up from 0 (unless warmup_ratio > 0)"}
    )
    warmup_ratio: float = field(
        default=0.0,
        metadata={"help": "share of max_update spent in linear warm-up from 0; when > 0 it replaces "
                  "warmup_updates (P-TAPT stage 1: 0.05)"},
    )
    hold_ratio: float = field(
        default=0.05, metadata={"help": "share of max_update spent at the peak rate after warm-up"}
    )
    max_update: int = II("optimization.max_update")
    lr: List[float] = II("optimization.lr")


def scheduled_lr(step: int, peak: float, warmup: int, hold: int, total: int) -> float:
    """Learning rate after ``step`` updates."""
    if step < warmup:
        return peak * step / warmup
    if step < warmup + hold or total <= warmup + hold:
        return peak
    return peak * max(0.0, (total - step) / (total - warmup - hold))


@register_lr_scheduler("ser_warmup_hold_linear", dataclass=WarmupHoldLinearConfig)
class WarmupHoldLinearSchedule(FairseqLRScheduler):
    def __init__(self, cfg: WarmupHoldLinearConfig, optimizer):
        super().__init__(cfg, optimizer)
        if cfg.max_update <= 0:
            raise ValueError("ser_warmup_hold_linear needs optimization.max_update > 0")
        if not 0 <= cfg.warmup_ratio <= 1 or not 0 <= cfg.hold_ratio <= 1:
            raise ValueError(f"ser_warmup_hold_linear: warmup_ratio ({cfg.warmup_ratio}) and hold_ratio "
                             f"({cfg.hold_ratio}) must lie in [0, 1]")
        self.peak = cfg.lr[0]
        self.warmup = (int(round(cfg.warmup_ratio * cfg.max_update)) if cfg.warmup_ratio > 0
                       else cfg.warmup_updates)
        self.hold = int(round(cfg.hold_ratio * cfg.max_update))
        self.step_update(0)

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        lr = scheduled_lr(num_updates, self.peak, self.warmup, self.hold, self.cfg.max_update)
        self.optimizer.set_lr(lr)
        return lr

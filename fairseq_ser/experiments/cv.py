"""Cross-validation: a method on every fold, fine-tuning repeated with different seeds, one table.

For each method and fold, the adaptation stages run once on the fold's
training audio (TAPT; P-TAPT's frame emotion model, pseudo-labels and
pseudo-label pretraining), then V-FT runs ``runs`` times from the adapted
checkpoint with seeds ``seed``, ``seed + 1``, ..., and each run's
``checkpoint_best.pt`` is scored on the fold's test split. Layout under
``out_dir``::

    results.md, results.json              the tables (written last, from every run's metrics.json)
    <method>/confusion_matrix.{txt,png}   summed over folds and runs
    <method>/<fold>/tapt/                 TAPT: checkpoint_last.pt, train.log, done.json
    <method>/<fold>/ptapt_stage1/         P-TAPT: checkpoint_best.pt, train.log, done.json
    <method>/<fold>/pseudo_labels/        P-TAPT: {train,valid}.km{K}, dict.km{K}.txt, ...
    <method>/<fold>/ptapt/                P-TAPT: checkpoint_last.pt, train.log, done.json
    <method>/<fold>/run<r>/               checkpoint_best.pt, train.log, done.json,
                                          eval-test/{predictions.tsv,metrics.json,confusion_matrix.png},
                                          metrics.json (the run's result, written last)

Resuming: a run is done when its ``metrics.json`` exists, a stage when its
``done.json`` does; anything else found is cleared and redone, so rerunning the
same command finishes what an interruption left and only re-aggregates when
everything is done.

Progress lines go to ``report`` (the logger by default; ``fairseq-ser cv``
prints them). Each run's best checkpoint is scored on ``device``.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..errors import CheckpointError, DataError, SerError
from ..fileio import atomic_open, read_json_or_none
from . import report as tables
from .fold_dirs import FoldDir, find_fold_dirs
from .overrides import Overrides
from .stages import METHODS, Recipe, Report, execute, note_settings, parse_methods

logger = logging.getLogger(__name__)

STAGE_CONFIGS = {"vft": ["vft"], "tapt": ["tapt", "vft"], "ptapt": ["ptapt_stage1", "ptapt", "vft"]}
RESULT = "metrics.json"


@dataclass
class CrossValidation:
    """Everything ``fairseq-ser cv`` is told; :meth:`run` does it and returns the aggregated results."""

    folds_root: str
    w2v_path: str
    out_dir: str
    methods: Sequence[str] = ("vft",)
    runs: int = 5
    overrides: Overrides = field(default_factory=Overrides)
    ks: Sequence[int] = (64, 512, 4096)
    seed: int = 1
    config_dir: str = "config"
    stage1_w2v_path: Optional[str] = None
    keep_last: bool = False
    progress: bool = True
    device: Optional[str] = None        # where runs are scored (cpu, cuda, cuda:N); None: CUDA when available
    report: Report = logger.info        # progress lines

    def check(self) -> List[FoldDir]:
        """Every input, before anything runs; errors name the path or value."""
        if isinstance(self.methods, str):
            self.methods = parse_methods(self.methods)
        else:
            parse_methods(",".join(self.methods))
        if self.runs < 1:
            raise SerError(f"--runs must be at least 1, got {self.runs}")
        if not self.ks or any(k < 2 for k in self.ks):
            raise SerError(f"--ks: cluster sizes must be at least 2, got {list(self.ks)}")
        for path in [self.w2v_path] + ([self.stage1_w2v_path] if self.stage1_w2v_path else []):
            if not os.path.isfile(path):
                raise CheckpointError(f"{path}: checkpoint not found")
        for method in self.methods:
            for config in STAGE_CONFIGS[method]:
                yaml = os.path.join(self.config_dir, f"{config}.yaml")
                if not os.path.isfile(yaml):
                    raise DataError(f"{yaml}: not found; run from the repository root or pass --config-dir "
                                    "(the folder of vft.yaml, tapt.yaml, ...)")
        return find_fold_dirs(self.folds_root)

    def run(self) -> Dict:
        folds = self.check()
        out = os.path.abspath(self.out_dir)
        recipe = Recipe(os.path.abspath(self.config_dir), os.path.abspath(self.w2v_path), self.overrides,
                        self.stage1_w2v_path and os.path.abspath(self.stage1_w2v_path), list(self.ks), self.seed)
        total = len(self.methods) * len(folds) * self.runs
        self.report(f"== cv: {', '.join(METHODS[m] for m in self.methods)} on {len(folds)} folds "
                    f"({', '.join(f.name for f in folds)}) x {self.runs} runs = {total} fine-tuning runs; "
                    f"output: {out}")
        start, done = time.time(), 0
        records: Dict[str, Dict[str, List[Dict]]] = {}
        for method in self.methods:
            records[method] = {}
            for fold in folds:
                where = os.path.join(out, method, fold.name)
                label = f"{method}/{fold.name}"
                stages, w2v = recipe.adaptation(method, fold.path, where, label)
                for stage in stages:
                    execute(stage, keep_all=self.keep_last, report=self.report)
                records[method][fold.name] = []
                for r in range(1, self.runs + 1):
                    done += 1
                    record = self.fine_tune(recipe, method, fold, r, w2v, f"{done}/{total}")
                    records[method][fold.name].append(record)
        results = tables.aggregate(records, METHODS)
        markdown = tables.write_report(out, results)
        self.report(f"\n== cross-validation results ({time.time() - start:.0f} s)\n\n{markdown}\n\n"
                    f"wrote {os.path.join(out, 'results.md')}, results.json and "
                    "<method>/confusion_matrix.{txt,png}")
        return results

    def fine_tune(self, recipe: Recipe, method: str, fold: FoldDir, r: int, w2v: str, count: str) -> Dict:
        """One V-FT run and its test scores: reused when its metrics.json is there."""
        directory = os.path.join(os.path.abspath(self.out_dir), method, fold.name, f"run{r}")
        seed = self.seed + r - 1
        stage = recipe.finetune(fold.path, directory, w2v, seed, f"{method}/{fold.name}/run{r}")
        record = read_json_or_none(stage.path(RESULT))
        if record is not None:
            self.report(f"[{stage.label}] skipped ({count}, done earlier): {_scores(record)}")
            note_settings(stage.label, record.get("settings"), stage.settings, self.report)
            if not self.keep_last and os.path.isfile(stage.path("checkpoint_last.pt")):
                os.remove(stage.path("checkpoint_last.pt"))
            return record
        train_seconds = execute(stage, keep_all=self.keep_last, report=self.report) or 0.0
        t0 = time.time()
        summary = _evaluate(fold, stage.path("checkpoint_best.pt"), stage.path("eval-test"), self.progress,
                            self.device)
        record = dict(summary, method=method, fold=fold.name, run=r, seed=seed,
                      path=os.path.relpath(directory, os.path.abspath(self.out_dir)),
                      train_seconds=train_seconds, eval_seconds=time.time() - t0, settings=stage.settings)
        with atomic_open(stage.path(RESULT), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        self.report(f"[{stage.label}] test ({count}): {_scores(record)} ({record['eval_seconds']:.0f} s)")
        return record


def _scores(record: Dict) -> str:
    return " | ".join(f"{label} {100 * record[key]:.1f}" for key, label in tables.METRICS)


def _evaluate(fold: FoldDir, checkpoint: str, results_path: str, progress: bool,
              device: Optional[str]) -> Dict:
    """Score the run's best checkpoint on the fold's test split (predictions, metrics, figure)."""
    import warnings

    import torch

    from ..evaluation import evaluate

    with warnings.catch_warnings():
        # torch's notice about fairseq's positional convolution, once per run
        warnings.filterwarnings("ignore", message=r".*weight_norm.*deprecated", category=FutureWarning)
        summary = evaluate(fold.path, checkpoint, "test", results_path, device=device, progress=progress)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()   # leave the GPU to the next training command
    return summary

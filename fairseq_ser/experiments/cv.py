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
                                          eval-<NAME>/ (--also-test: another corpus, shared classes),
                                          metrics.json (the run's result, written last)

Unlabelled audio. The label-free stages (TAPT, the pseudo-labels with their
k-means, P-TAPT pretraining) train on every training utterance of the fold,
plus the fold's ``unlabelled.tsv`` when it has one (``fairseq-ser subset``
writes it) and the extra audio of ``unlabelled`` (converted once into
``unlabelled/``). Their manifest is then ``adaptation/<fold>/train.tsv``
(:func:`fairseq_ser.data.unlabelled.write_adaptation_dir`: the fold's valid and
test utterances are never in it); they validate on the fold's valid split as
before. V-FT and P-TAPT stage 1 see the labelled training split only.

The low-resource curve (``label_fractions``). ``subsets/<fraction>/<fold>/``
holds nested labelled subsets of every fold (:mod:`fairseq_ser.data.subsets`).
TAPT does not depend on the labels, so it runs once per fold
(``tapt/<fold>/tapt/``); P-TAPT stage 1 and everything after it, and the V-FT
runs, once per fold and fraction (``<method>/<fold>/<fraction>/...``). Each
fraction's tables go to ``by_fraction/<fraction>/results.md`` (as above); the
top-level ``results.md`` and ``results.json`` put the fractions side by side
(:mod:`.low_resource`), and ``low_resource.png`` plots UA against the fraction.

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
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..data.fold_dirs import FoldDir, find_fold_dirs
from ..data.manifest import read_manifest, unlabelled_path
from ..errors import CheckpointError, DataError, SerError
from ..fileio import atomic_open, read_json_or_none
from . import low_resource
from . import report as tables
from .cross_corpus import also_test_entry, parse_also_test, score_also_test
from .low_resource import check_fractions, fraction_label
from .overrides import Overrides
from .stages import METHODS, Recipe, Report, execute, note_settings, parse_methods

logger = logging.getLogger(__name__)

STAGE_CONFIGS = {"vft": ["vft"], "tapt": ["tapt", "vft"], "ptapt": ["ptapt_stage1", "ptapt", "vft"]}
RESULT = "metrics.json"
# folders under the output folder
SUBSETS = "subsets"            # the labelled subsets of every fold (--label-fractions)
FRACTIONS = "by_fraction"      # each fraction's own tables and confusion matrices
UNLABELLED = "unlabelled"      # the extra unlabelled audio, converted (--unlabelled)
ADAPTATION = "adaptation"      # per fold: the audio of the label-free stages, when it is more than train.tsv


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
    label_fractions: Optional[Sequence[float]] = None   # the low-resource curve: nested labelled subsets
    unlabelled: Sequence[str] = ()      # extra unlabelled audio (folders or manifests) for the label-free stages
    also_test: Sequence[str] = ()       # NAME=FOLDS_DIR: other corpora every run is also scored on
    jobs: int = 1                       # method x fold chains run side by side

    def __post_init__(self):
        self.env: Dict[str, str] = {}   # added to every training command's environment (jobs > 1: threads)
        self._count_lock = threading.Lock()

    def check(self) -> List[FoldDir]:
        """Every input, before anything runs; errors name the path or value."""
        if isinstance(self.methods, str):
            self.methods = parse_methods(self.methods)
        else:
            parse_methods(",".join(self.methods))
        if self.runs < 1:
            raise SerError(f"--runs must be at least 1, got {self.runs}")
        if self.jobs < 1:
            raise SerError(f"--jobs must be at least 1, got {self.jobs}")
        if not self.ks or any(k < 2 for k in self.ks):
            raise SerError(f"--ks: cluster sizes must be at least 2, got {list(self.ks)}")
        if self.label_fractions:
            self.label_fractions = check_fractions(self.label_fractions)
        self.other_corpora = parse_also_test(self.also_test)
        for name, folds_dir in self.other_corpora.items():
            find_fold_dirs(folds_dir)   # checked before anything trains, like the corpus's own folds
        for source in self.unlabelled:
            if not os.path.exists(source):
                raise DataError(f"{source}: unlabelled audio not found (a folder of audio files or a .tsv manifest)")
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
        subsets = self.labelled_subsets(out, folds)   # subset name -> fold name -> FoldDir; {None: ...} without fractions
        extra = self.extra_audio(out)
        total = len(self.methods) * len(folds) * len(subsets) * self.runs
        fractions = "" if None in subsets else f" at {len(subsets)} labelled fractions"
        self.report(f"== cv: {', '.join(METHODS[m] for m in self.methods)} on {len(folds)} folds "
                    f"({', '.join(f.name for f in folds)}){fractions} x {self.runs} runs = {total} fine-tuning "
                    f"runs; output: {out}")
        start, count = time.time(), [0, total]
        audio = {fold.name: self.adaptation_audio(out, fold, extra) for fold in folds}   # before any job starts
        chains = [(method, fold) for method in self.methods for fold in folds]
        done = self.run_chains(chains, lambda method, fold, report: self.chain(
            recipe, method, fold, os.path.join(out, method, fold.name), audio[fold.name], subsets, count, report))
        records: Dict[Optional[str], Dict[str, Dict[str, List[Dict]]]] = {name: {} for name in subsets}
        for (method, fold), chain_records in zip(chains, done):   # the order of a one-job run, whatever finished first
            for name, runs in chain_records.items():
                records[name].setdefault(method, {})[fold.name] = runs
        return self.write_results(out, records, time.time() - start)

    def chain(self, recipe: Recipe, method: str, fold: FoldDir, where: str, audio_dir: str,
              subsets: Dict[Optional[str], Dict[str, FoldDir]], count: List[int], report: Report) -> Dict:
        """One method on one fold: its adaptation, then every fraction's runs; {subset name: [run records]}."""
        w2v = recipe.w2v_path
        if method == "tapt":   # label-free: once per fold, whatever the labelled fraction
            w2v = self.adapt(recipe, method, fold.path, where, f"{method}/{fold.name}", audio_dir, report)
        records = {}
        for name, subset in subsets.items():
            labelled = subset[fold.name]
            sub_where = where if name is None else os.path.join(where, name)
            label = f"{method}/{fold.name}" + ("" if name is None else f"/{name}")
            if method == "ptapt":   # stage 1 learns from the labels: once per fold and fraction
                w2v = self.adapt(recipe, method, labelled.path, sub_where, label, audio_dir, report)
            records[name] = [self.fine_tune(recipe, method, labelled, r, w2v, sub_where, label, count, report)
                             for r in range(1, self.runs + 1)]
        return records

    def run_chains(self, chains: Sequence, work) -> List:
        """``work(method, fold, report)`` for every chain, ``jobs`` at a time; the results in ``chains``' order.

        Chains share nothing they write, so they run side by side. With more
        than one job, each training command gets an equal share of the CPU
        cores (``OMP_NUM_THREADS``, unless the environment sets it), and the
        epoch lines, which carry no stage name, are prefixed with the chain's.
        """
        if self.jobs <= 1 or len(chains) <= 1:
            return [work(method, fold, self.report) for method, fold in chains]
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        jobs = min(self.jobs, len(chains))
        if "OMP_NUM_THREADS" not in os.environ:
            self.env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
        self.report(f"== {len(chains)} method x fold chains, {jobs} at a time"
                    + (f" ({self.env['OMP_NUM_THREADS']} CPU thread(s) each)" if self.env else ""))
        lock = threading.Lock()

        def chain_report(label):
            def report(line):
                with lock:
                    self.report(f"[{label}] {line.strip()}" if line.startswith(" ") else line)
            return report

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(work, method, fold, chain_report(f"{method}/{fold.name}"))
                       for method, fold in chains]
            wait(futures, return_when=FIRST_EXCEPTION)
            # one failed (or all are done): start no other chain; the running ones finish
            pool.shutdown(cancel_futures=True)
        return [future.result() for future in futures]   # raises the first chain's error

    def adapt(self, recipe: Recipe, method: str, fold_dir: str, directory: str, label: str,
              audio_dir: str, report: Report) -> str:
        """Run the adaptation stages of ``method`` (those not done); return the checkpoint V-FT starts from."""
        stages, w2v = recipe.adaptation(method, fold_dir, directory, label, audio_dir)
        for stage in stages:
            execute(stage, keep_all=self.keep_last, report=report, env=self.env)
        return w2v

    def labelled_subsets(self, out: str, folds: Sequence[FoldDir]) -> Dict[Optional[str], Dict[str, FoldDir]]:
        """The fold folders V-FT trains on: the given ones, or one nested subset per labelled fraction."""
        if not self.label_fractions:
            return {None: {f.name: f for f in folds}}
        from ..data.subsets import write_subsets

        fractions = self.label_fractions
        self.report(f"== labelled subsets of every fold: {', '.join(fraction_label(f) for f in fractions)} "
                    f"(nested, stratified by class and speaker, seed {self.seed})")
        result = write_subsets(self.folds_root, os.path.join(out, SUBSETS), fractions=fractions, seed=self.seed,
                               progress=self.progress)
        self.fraction_of = dict(zip(result.names, fractions))
        return {name: {f.name: f for f in find_fold_dirs(os.path.join(result.out_dir, name))}
                for name in result.names}

    def extra_audio(self, out: str) -> List[str]:
        """The manifest of the extra unlabelled audio (converted and checked once), or none."""
        if not self.unlabelled:
            return []
        from ..data.unlabelled import prepare_unlabelled

        manifest = prepare_unlabelled(list(self.unlabelled), os.path.join(out, UNLABELLED),
                                      progress=self.progress)
        self.report(f"== extra unlabelled audio: {len(read_manifest(manifest))} files ({manifest}); "
                    "TAPT, the pseudo-labels and P-TAPT use it, V-FT and P-TAPT stage 1 do not")
        return [manifest]

    def adaptation_audio(self, out: str, fold: FoldDir, extra: Sequence[str]) -> str:
        """The folder of the label-free stages' audio: the fold itself, or every training utterance plus
        the unlabelled audio (never the fold's valid or test utterances)."""
        if not extra and not os.path.isfile(unlabelled_path(fold.path)):
            return fold.path
        from ..data.unlabelled import write_adaptation_dir

        directory = os.path.join(out, ADAPTATION, fold.name)
        audio = write_adaptation_dir(fold.path, directory, extra)
        self.report(f"[{fold.name}] adaptation audio: {audio.describe()} ({directory})")
        return directory

    def score_other_corpora(self, stage, record: Dict, report: Report) -> bool:
        """Score the run's checkpoint on each --also-test corpus it has no score on; True if any was added."""
        missing = [name for name in self.other_corpora if name not in record.get("also_test", {})]
        for name in missing:
            summary = _score_other(stage.path("checkpoint_best.pt"), self.other_corpora[name],
                                   stage.path(f"eval-{name}"), self.progress, self.device)
            record.setdefault("also_test", {})[name] = also_test_entry(summary)
            report(f"[{stage.label}] {name} (shared classes {', '.join(summary['classes_shared'])}): "
                   f"{_scores(summary)}")
        return bool(missing)

    def cross_corpus_section(self, per_method: Dict, results: Dict) -> str:
        """With --also-test: the train x test corpus table, added to ``results``; its Markdown."""
        if not self.other_corpora:
            return ""
        own = os.path.basename(os.path.normpath(os.path.abspath(self.folds_root)))
        only = {m: {f: [dict(r, also_test={n: r["also_test"][n] for n in self.other_corpora}) for r in runs]
                    for f, runs in folds.items()} for m, folds in per_method.items()}
        results["cross_corpus"] = tables.cross_corpus(only, METHODS, own)
        return tables.cross_corpus_tables(results["cross_corpus"])

    def write_results(self, out: str, records: Dict, seconds: float) -> Dict:
        """The tables (results.md, results.json), confusion matrices and, with fractions, the curve."""
        if None in records:
            results = tables.aggregate(records[None], METHODS)
            cross = self.cross_corpus_section(records[None], results)
            markdown = tables.write_report(out, results, appendix=cross)
            markdown += "\n\n" + cross if cross else ""
            self.report(f"\n== cross-validation results ({seconds:.0f} s)\n\n{markdown}\n\n"
                        f"wrote {os.path.join(out, 'results.md')}, results.json and "
                        "<method>/confusion_matrix.{txt,png}")
            return results
        by_fraction = {}
        for name, per_method in records.items():
            results = tables.aggregate(per_method, METHODS)
            cross = self.cross_corpus_section(per_method, results)
            tables.write_report(os.path.join(out, FRACTIONS, name), results, appendix=cross)
            by_fraction[self.fraction_of[name]] = results
        results = low_resource.curve(by_fraction)
        markdown = low_resource.curve_markdown(results)
        figure = low_resource.write_curve_figure(out, results)
        results["subsets"] = {name: self.fraction_of[name] for name in records}
        results["by_fraction"] = {name: by_fraction[self.fraction_of[name]] for name in records}
        with atomic_open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
            f.write("# Cross-validation results by labelled fraction\n\n" + markdown + "\n\n"
                    f"Each fraction's own tables and confusion matrices: {FRACTIONS}/<fraction>/results.md. "
                    f"The curve: {low_resource.FIGURE}.\n")
        with atomic_open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        self.report(f"\n== cross-validation results by labelled fraction ({seconds:.0f} s)\n\n{markdown}\n\n"
                    f"wrote {os.path.join(out, 'results.md')}, results.json, {figure} and "
                    f"{FRACTIONS}/<fraction>/results.md")
        return results

    def fine_tune(self, recipe: Recipe, method: str, fold: FoldDir, r: int, w2v: str, where: str, label: str,
                  count: List[int], report: Report) -> Dict:
        """One V-FT run and its test scores: reused when its metrics.json is there."""
        with self._count_lock:
            count[0] += 1
            progress = f"{count[0]}/{count[1]}"
        directory = os.path.join(where, f"run{r}")
        seed = self.seed + r - 1
        stage = recipe.finetune(fold.path, directory, w2v, seed, f"{label}/run{r}")
        record = read_json_or_none(stage.path(RESULT))
        if record is not None:
            report(f"[{stage.label}] skipped ({progress}, done earlier): {_scores(record)}")
            note_settings(stage.label, record.get("settings"), stage.settings, report)
            if not self.keep_last and os.path.isfile(stage.path("checkpoint_last.pt")):
                os.remove(stage.path("checkpoint_last.pt"))
            if self.score_other_corpora(stage, record, report):   # an --also-test corpus added since
                with atomic_open(stage.path(RESULT), "w", encoding="utf-8") as f:
                    json.dump(record, f, indent=2)
            return record
        train_seconds = execute(stage, keep_all=self.keep_last, report=report, env=self.env) or 0.0
        t0 = time.time()
        summary = _evaluate(fold, stage.path("checkpoint_best.pt"), stage.path("eval-test"), self.progress,
                            self.device)
        record = dict(summary, method=method, fold=fold.name, run=r, seed=seed,
                      path=os.path.relpath(directory, os.path.abspath(self.out_dir)),
                      train_seconds=train_seconds, eval_seconds=time.time() - t0, settings=stage.settings)
        self.score_other_corpora(stage, record, report)
        with atomic_open(stage.path(RESULT), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        report(f"[{stage.label}] test ({progress}): {_scores(record)} ({record['eval_seconds']:.0f} s)")
        return record


def _scores(record: Dict) -> str:
    return " | ".join(f"{label} {100 * record[key]:.1f}" for key, label in tables.METRICS)


def _score_other(checkpoint: str, folds_dir: str, results_path: str, progress: bool, device: Optional[str]) -> Dict:
    """All of another corpus, shared classes only (:func:`.cross_corpus.score_also_test`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.*deprecated", category=FutureWarning)
        return score_also_test(checkpoint, folds_dir, results_path, device, progress)


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

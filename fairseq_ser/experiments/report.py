"""Cross-validation tables and summed confusion matrices, from the runs' metrics.

Scores are in %. Per fold: mean ± standard deviation over the runs. Average:
the mean of all runs, with the two spreads of the paper's reference code:
``fold_std``, the standard deviation across folds averaged over runs, and
``run_std``, the standard deviation across runs of the fold-averaged score
(population standard deviations, numpy's default, as there). The confusion
matrix of a method is the sum over all folds and runs of the test confusion
matrices; classes are matched by name, so folds may order them differently.
"""

import json
import os
from typing import Dict, List, Sequence

import numpy as np

from .. import metrics
from ..errors import SerError
from ..fileio import atomic_open
from ..plots import save_confusion_matrix

METRICS = (("ua", "UA"), ("wa", "WA"), ("macro_f1", "macro-F1"))


def summed_confusion(records: Sequence[Dict]):
    """Class names (first-seen order) and the sum of the records' confusion matrices."""
    names: List[str] = []
    for r in records:
        names += [n for n in r["classes"] if n not in names]
    total = np.zeros((len(names), len(names)), dtype=np.int64)
    for r in records:
        index = [names.index(n) for n in r["classes"]]
        total[np.ix_(index, index)] += np.asarray(r["confusion_matrix"], dtype=np.int64)
    return names, total


def aggregate_method(name: str, runs: Dict[str, List[Dict]]) -> Dict:
    """``runs``: fold -> the run records (metrics.json of each run) of one method, same count per fold."""
    folds = list(runs)
    counts = {len(v) for v in runs.values()}
    if len(counts) != 1 or 0 in counts:
        raise SerError(f"{name}: every fold needs the same number of runs, got "
                         + ", ".join(f"{f}: {len(v)}" for f, v in runs.items()))
    out = {"name": name, "per_fold": {f: {} for f in folds}, "average": {}, "runs": []}
    for key, _ in METRICS:
        table = np.array([[100.0 * r[key] for r in runs[f]] for f in folds]).T   # runs x folds
        for j, fold in enumerate(folds):
            out["per_fold"][fold][key] = {"mean": float(table[:, j].mean()), "std": float(table[:, j].std()),
                                          "runs": [float(v) for v in table[:, j]]}
        out["average"][key] = {"mean": float(table.mean()), "fold_std": float(table.std(axis=1).mean()),
                               "run_std": float(table.mean(axis=1).std())}
    for fold in folds:
        for r in runs[fold]:
            out["runs"].append({"fold": fold, "run": r["run"], "seed": r["seed"], "path": r["path"],
                                **{key: 100.0 * r[key] for key, _ in METRICS}})
    classes, cm = summed_confusion([r for f in folds for r in runs[f]])
    out["confusion_matrix"] = {"classes": classes, "matrix": cm.tolist(), "num_utterances": int(cm.sum())}
    return out


def aggregate(records: Dict[str, Dict[str, List[Dict]]], names: Dict[str, str]) -> Dict:
    """``records``: method -> fold -> run records; ``names``: method -> display name."""
    methods = {m: aggregate_method(names[m], runs) for m, runs in records.items()}
    first = next(iter(records.values()))
    return {"unit": "percent", "folds": list(first), "runs": len(next(iter(first.values()))),
            "seeds": [r["seed"] for r in next(iter(first.values()))], "methods": methods}


def _cell(stats: Dict, runs: int) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}" if runs > 1 else f"{stats['mean']:.1f}"


def tables_markdown(results: Dict) -> str:
    """The summary table and one table per metric (a row per method), as Markdown."""
    folds, runs, methods = results["folds"], results["runs"], results["methods"]
    lines = [f"{len(folds)} folds x {runs} runs (seeds {', '.join(map(str, results['seeds']))}), "
             "test split of each fold, in %. Per fold: mean ± std over runs; average: mean of all "
             "runs; fold-std: std across folds (mean over runs); run-std: std across runs of the "
             "fold average.", "", "### Average over folds and runs", "",
             "| method | " + " | ".join(label for _, label in METRICS) + " |",
             "| --- |" + " --- |" * len(METRICS)]
    for m in methods.values():
        lines.append(f"| {m['name']} | " + " | ".join(f"{m['average'][k]['mean']:.1f}" for k, _ in METRICS) + " |")
    for key, label in METRICS:
        lines += ["", f"### {label}", "", "| method | " + " | ".join(folds) + " | average | fold-std | run-std |",
                  "| --- |" + " --- |" * (len(folds) + 3)]
        for m in methods.values():
            avg = m["average"][key]
            run_std = f"{avg['run_std']:.1f}" if runs > 1 else "-"
            lines.append(f"| {m['name']} | " + " | ".join(_cell(m["per_fold"][f][key], runs) for f in folds)
                         + f" | {avg['mean']:.1f} | {avg['fold_std']:.1f} | {run_std} |")
    return "\n".join(lines)


def confusion_text(method: Dict, folds: int, runs: int) -> str:
    cm = method["confusion_matrix"]
    summary = metrics.summarize(np.asarray(cm["matrix"]), cm["classes"])
    return (f"{method['name']}: test predictions of {folds} folds x {runs} runs, pooled\n\n"
            + metrics.format_report(summary))


def write_report(out_dir: str, results: Dict, appendix: str = "") -> str:
    """Write results.md, results.json and each method's confusion_matrix.{txt,png}; return the tables.

    ``appendix``: Markdown added to results.md after the tables (the cross-corpus table).
    """
    folds, runs = len(results["folds"]), results["runs"]
    tables = tables_markdown(results)
    parts = ["# Cross-validation results", "", tables] + (["", appendix] if appendix else []) + [
        "", "## Confusion matrices, summed over folds and runs"]
    for method, m in results["methods"].items():
        text = confusion_text(m, folds, runs)
        with atomic_open(os.path.join(out_dir, method, "confusion_matrix.txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        cm = m["confusion_matrix"]
        save_confusion_matrix(np.asarray(cm["matrix"]), cm["classes"], os.path.join(out_dir, method,
                              "confusion_matrix.png"), title=f"{m['name']}: {folds} folds x {runs} runs")
        parts += ["", f"### {m['name']}", "", "```", text, "```"]
    with atomic_open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    with atomic_open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return tables


CROSS_CORPUS_PROTOCOL = ("each run's checkpoint on its fold's own test split, and on all of each other corpus "
                         "(the union of its folds' test splits), scoring only utterances of the classes the "
                         "model and that corpus share, argmax over those classes")


def cross_corpus(records: Dict[str, Dict[str, List[Dict]]], names: Dict[str, str], train_corpus: str) -> Dict:
    """The train corpus x test corpus table (``fairseq-ser cv --also-test``), as JSON.

    ``records``: method -> fold -> run records, each with its own test scores
    and ``also_test[NAME]`` (:func:`fairseq_ser.experiments.cross_corpus.also_test_entry`)
    for every other corpus; ``names``: method -> display name. A row per method
    trained on ``train_corpus``; a column for its own test split, then one
    per other corpus. Cells, in %: ``mean`` and ``std`` (population) over every
    run of every fold; ``num_utterances``, the distinct numbers scored per run.
    """
    flat = {m: [r for runs in folds.values() for r in runs] for m, folds in records.items()}
    others: List[str] = []
    for runs in flat.values():
        for r in runs:
            others += [n for n in r.get("also_test", {}) if n not in others]
    if train_corpus in others:
        raise SerError(f"--also-test {train_corpus}: the name of the cross-validated corpus itself; "
                       "give the other corpus another name")
    out = {"unit": "percent", "protocol": CROSS_CORPUS_PROTOCOL, "train_corpus": train_corpus,
           "test_corpora": [train_corpus] + others, "methods": {}}
    for method, runs in flat.items():
        cells = {}
        for test in out["test_corpora"]:
            scored = []
            for r in runs:
                entry = r if test == train_corpus else r.get("also_test", {}).get(test)
                if entry is None:
                    raise SerError(f"{r.get('path', method)}: the run has no score on {test!r} (also_test)")
                scored.append(entry)
            cell = {"runs": len(scored), "num_utterances": sorted({e["num_utterances"] for e in scored})}
            for key, _ in METRICS:
                values = np.array([100.0 * e[key] for e in scored])
                cell[key] = {"mean": float(values.mean()), "std": float(values.std())}
            if test != train_corpus:
                cell["num_dropped"] = sorted({e["num_dropped"] for e in scored})
                cell["classes_shared"] = []
                for e in scored:
                    cell["classes_shared"] += [c for c in e["classes_shared"] if c not in cell["classes_shared"]]
            cells[test] = cell
        out["methods"][method] = {"name": names[method], "train_corpus": train_corpus, "cells": cells}
    return out


def cross_corpus_tables(cross: Dict) -> str:
    """:func:`cross_corpus`'s table as Markdown: one table per metric, a row per method, a column per test corpus."""
    train, tests = cross["train_corpus"], cross["test_corpora"]
    first = next(iter(cross["methods"].values()))["cells"]
    lines = ["## Cross-corpus: train corpus x test corpus", "",
             f"Trained on {train}; scored {cross['protocol']}. In %, mean ± std over all runs and folds "
             f"({first[train]['runs']} checkpoints per method).", ""]
    for test in tests[1:]:
        cell = first[test]
        lines.append(f"- {test}: shared classes {', '.join(cell['classes_shared'])}; "
                     f"{'/'.join(map(str, cell['num_utterances']))} utterances scored, "
                     f"{'/'.join(map(str, cell['num_dropped']))} of other classes dropped")
    header = [f"{train} (cv test)"] + tests[1:]
    for key, label in METRICS:
        lines += ["", f"### {label}", "", "| train \\ test | " + " | ".join(header) + " |",
                  "| --- |" + " --- |" * len(tests)]
        for m in cross["methods"].values():
            cells = [f"{m['cells'][t][key]['mean']:.1f} ± {m['cells'][t][key]['std']:.1f}" for t in tests]
            lines.append(f"| {m['name']} ({m['train_corpus']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# How many times the larger run-std a difference must exceed to count (verdict_lines)
SPREAD_FACTOR = 2.0


def _compared_pairs(methods: Sequence[str]) -> List[tuple]:
    """(first, second) pairs to compare: every method against V-FT, then P-TAPT against TAPT."""
    pairs = [(m, "vft") for m in methods if m != "vft" and "vft" in methods]
    if "tapt" in methods and "ptapt" in methods:
        pairs.append(("ptapt", "tapt"))
    return pairs


def verdict_lines(results: Dict, key: str = "ua", factor: float = SPREAD_FACTOR) -> List[str]:
    """In words, whether each method's mean score differs from V-FT's (and P-TAPT's from TAPT's) beyond the spread.

    ``results``: :func:`aggregate`'s dict. The rule, a rule of thumb rather
    than a significance test: the difference of the two methods' means
    (over all folds and runs) counts when its size exceeds ``factor`` times
    the larger of their ``run_std`` (the standard deviation across runs of
    the fold-averaged score: how much a method moves when only the seed
    changes; the folds are the same for every method, so their spread is
    left out). With two runs, a run-std is half the gap between them. With
    one run per fold there is no run-std, and the lines say the spread is
    unknown. No pair to compare (one method): no lines.
    """
    methods, runs = results["methods"], results["runs"]
    label = dict(METRICS)[key]
    pairs = _compared_pairs(list(methods))
    if not pairs:
        return []
    if runs > 1:
        lines = [f"Verdict ({label}; a difference counts when it exceeds {factor:g} x the larger run-std "
                 "of the two methods):"]
    else:
        lines = [f"Verdict ({label}): one run per fold, so the run-to-run spread is unknown; "
                 "rerun with 2 or more runs to tell differences from seed noise:"]
    for first, second in pairs:
        a, b = methods[first], methods[second]
        diff = a["average"][key]["mean"] - b["average"][key]["mean"]
        text = f"- {a['name']} vs {b['name']}: {diff:+.1f} {label} points"
        if runs <= 1:
            lines.append(text + ", spread unknown: no verdict")
            continue
        spread = max(a["average"][key]["run_std"], b["average"][key]["run_std"])
        if abs(diff) > factor * spread:
            better = a["name"] if diff > 0 else b["name"]
            lines.append(text + f", beyond the run-to-run spread (run-std {spread:.1f}): {better} is better "
                         "at this size")
        else:
            lines.append(text + f", within the run-to-run spread (run-std {spread:.1f}): not distinguishable "
                         "at this size")
    return lines

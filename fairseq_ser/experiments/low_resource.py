"""The low-resource curve: every method at every labelled fraction, side by side.

``fairseq-ser cv --label-fractions`` scores each fraction like a
cross-validation of its own (:func:`.report.aggregate`: per fold mean ± std
over runs, the average with its fold-std and run-std). This module puts the
fractions together: per method and fraction, UA, WA and macro-F1 as the mean
of all runs ± run-std (the spread over seeds of the fold-averaged score, the
paper's error bars), as a Markdown table and as a figure of UA against the
labelled fraction (logarithmic x axis, one line per method).
"""

import os
from typing import Dict, Sequence

from ..plots import save_fraction_curve
from .report import METRICS

FIGURE = "low_resource.png"


def fraction_label(fraction: float) -> str:
    """``0.1`` -> ``'10 %'``."""
    return f"{100 * fraction:g} %"


def curve(by_fraction: Dict[float, Dict]) -> Dict:
    """``by_fraction``: labelled fraction -> that fraction's aggregated results; one series per method."""
    fractions = sorted(by_fraction)
    first = by_fraction[fractions[0]]
    methods = {}
    for method in first["methods"]:
        entry = {"name": first["methods"][method]["name"]}
        for key, _ in METRICS:
            averages = [by_fraction[f]["methods"][method]["average"][key] for f in fractions]
            entry[key] = {stat: [a[stat] for a in averages] for stat in ("mean", "run_std", "fold_std")}
        methods[method] = entry
    return {"unit": "percent", "fractions": fractions, "folds": first["folds"], "runs": first["runs"],
            "seeds": first["seeds"], "methods": methods}


def curve_markdown(results: Dict) -> str:
    """One table per metric: a row per method, a column per fraction, mean ± run-std."""
    fractions, runs = results["fractions"], results["runs"]
    spread = " ± run-std (the spread over seeds of the fold average)" if runs > 1 else " (1 run: no spread)"
    lines = [f"{len(results['folds'])} folds x {runs} runs at each labelled fraction, test split of each fold, "
             f"in %: mean of all runs{spread}."]
    for key, label in METRICS:
        lines += ["", f"### {label} by labelled fraction", "",
                  "| method | " + " | ".join(fraction_label(f) for f in fractions) + " |",
                  "| --- |" + " --- |" * len(fractions)]
        for m in results["methods"].values():
            cells = [f"{mean:.1f} ± {std:.1f}" if runs > 1 else f"{mean:.1f}"
                     for mean, std in zip(m[key]["mean"], m[key]["run_std"])]
            lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_curve_figure(out_dir: str, results: Dict) -> str:
    """``low_resource.png``: UA against the labelled fraction; returns its path."""
    runs = results["runs"]
    series = {m["name"]: (m["ua"]["mean"], m["ua"]["run_std"] if runs > 1 else None)
              for m in results["methods"].values()}
    path = os.path.join(out_dir, FIGURE)
    save_fraction_curve(results["fractions"], series, path, ylabel="UA (%)",
                        title=f"{len(results['folds'])} folds x {runs} runs" + (", ± run-std" if runs > 1 else ""))
    return path


def check_fractions(fractions: Sequence[float]) -> list:
    """Distinct fractions in (0, 1], ascending; anything else is an error naming the value."""
    from ..errors import SerError

    out = sorted(set(float(f) for f in fractions))
    bad = [f for f in out if not 0.0 < f <= 1.0]
    if bad or not out:
        raise SerError(f"--label-fractions: every fraction must be in (0, 1], got {list(fractions)}")
    return out

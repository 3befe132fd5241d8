"""``fairseq-ser cv``: the fold/run loop, its tables, resuming, bad input.

The command and every stage it runs (fairseq-hydra-train, fairseq-ser
pseudo-labels) run in the test process: the stage runner is swapped for
tests/inprocess.py's, which runs the same argv through fairseq's own entry
point. The stage commands as subprocesses are the end-to-end tests' job
(test_vft_train.py, test_tapt.py, test_ptapt.py).
"""

import json
import os
import re
import shutil
import threading

import numpy as np
import pytest
import torch

import inprocess
from commands import CPU_VFT, REPO
from fairseq_ser.cli.main import main
from fairseq_ser.errors import SerError
from fairseq_ser.experiments import stages
from fairseq_ser.experiments.overrides import Overrides
from fairseq_ser.experiments.report import aggregate, tables_markdown, verdict_lines


# CPU_VFT with fewer updates: every stage below trains, and there are 13 of them
TINY = CPU_VFT + ["optimization.max_update=3"]


@pytest.fixture(autouse=True)
def stages_in_process(monkeypatch):
    """Each stage's command runs in this process instead of as a subprocess, with the same argv."""
    monkeypatch.setattr(stages, "run_logged", inprocess.run_logged)


def cv(folds, w2v, out, *extra, method="vft", runs=2):
    return inprocess.run_command(["fairseq-ser", "cv", "--methods", method, "--manifests", folds,
                                  "--checkpoint", w2v, "--runs", runs, "--out", out, "--no-progress", *extra])


def n_test(fold, split="test"):
    return len((fold / f"{split}.tsv").read_text().splitlines()) - 1


def started(stdout):
    """Labels of the stages that ran (rather than being skipped)."""
    return re.findall(r"^\[(\S+)\] .*: running", stdout, re.M)


def test_vft_two_folds_two_runs_tables_and_resume(pretrained_ckpt, synth_folds, tmp_path):
    out = tmp_path / "cv"
    proc = cv(synth_folds, pretrained_ckpt, out, *TINY)
    runs = [f"vft/fold{f}/run{r}" for f in (1, 2) for r in (1, 2)]
    assert started(proc.stdout) == runs
    assert "epoch 001" in proc.stdout and "test (4/4): UA" in proc.stdout

    records = {}
    for name in runs:
        run = out / name
        for f in ("checkpoint_best.pt", "train.log", "done.json", "metrics.json",
                  "eval-test/predictions.tsv", "eval-test/confusion_matrix.png"):
            assert (run / f).is_file(), run / f
        assert not (run / "checkpoint_last.pt").exists()   # removed once the run is done
        records[name] = json.loads((run / "metrics.json").read_text())
        seed = int(name[-1])
        assert records[name]["seed"] == seed
        assert f"common.seed={seed}" in json.loads((run / "done.json").read_text())["argv"]
        assert torch.load(run / "checkpoint_best.pt", weights_only=True)["cfg"]["common"]["seed"] == seed

    results = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    method = results["methods"]["vft"]
    assert results["folds"] == ["fold1", "fold2"] and results["seeds"] == [1, 2]
    for key in ("ua", "wa", "macro_f1"):
        table = np.array([[100 * records[f"vft/fold{f}/run{r}"][key] for f in (1, 2)] for r in (1, 2)])
        for j, fold in enumerate(("fold1", "fold2")):
            stats = method["per_fold"][fold][key]
            assert stats["runs"] == pytest.approx(list(table[:, j]))
            assert stats["mean"] == pytest.approx(table[:, j].mean())
            assert stats["std"] == pytest.approx(table[:, j].std())
        average = method["average"][key]
        assert average["mean"] == pytest.approx(table.mean())
        assert average["fold_std"] == pytest.approx(table.std(axis=1).mean())
        assert average["run_std"] == pytest.approx(table.mean(axis=1).std())
    ua = method["per_fold"]["fold1"]["ua"]
    row = next(line for line in md.split("### UA")[1].splitlines() if line.startswith("| V-FT"))
    assert row.startswith(f"| V-FT | {ua['mean']:.1f} ± {ua['std']:.1f} |")
    assert f"| {method['average']['ua']['mean']:.1f} |" in row
    assert "### macro-F1" in md and "### WA" in md

    cm = np.array(method["confusion_matrix"]["matrix"])
    assert cm.sum() == 2 * (n_test(synth_folds / "fold1") + n_test(synth_folds / "fold2"))
    assert (cm == sum(np.array(r["confusion_matrix"]) for r in records.values())).all()
    assert (out / "vft" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "confusion matrix" in (out / "vft" / "confusion_matrix.txt").read_text()

    # resuming: fold1/run2 lost its result only (re-scored, not retrained); fold2/run1 was
    # interrupted while training (no done.json; cleared and retrained); the others are skipped
    kept = (out / "vft/fold1/run2/checkpoint_best.pt").stat().st_mtime_ns
    (out / "vft/fold1/run2/metrics.json").unlink()
    for f in ("metrics.json", "done.json", "checkpoint_best.pt"):
        (out / "vft/fold2/run1" / f).unlink()
    (out / "vft/fold2/run1/checkpoint_last.pt").write_bytes(b"half-written")
    proc = cv(synth_folds, pretrained_ckpt, out, *TINY)
    assert started(proc.stdout) == ["vft/fold2/run1"]
    assert "[vft/fold2/run1] unfinished earlier: cleared" in proc.stdout
    assert re.search(r"\[vft/fold1/run1\] skipped", proc.stdout)
    assert re.search(r"\[vft/fold1/run2\] V-FT \(seed 2\): skipped", proc.stdout)
    assert "[vft/fold1/run2] test (2/4)" in proc.stdout
    assert (out / "vft/fold1/run2/checkpoint_best.pt").stat().st_mtime_ns == kept
    assert (out / "vft/fold2/run1/metrics.json").is_file()
    assert not (out / "vft/fold2/run1/checkpoint_last.pt").exists()

    # everything done: nothing trains, the tables are written again from the runs' results
    before = json.loads((out / "results.json").read_text())
    (out / "results.md").unlink()
    proc = cv(synth_folds, pretrained_ckpt, out, *TINY)
    assert started(proc.stdout) == [] and "test (" not in proc.stdout
    assert json.loads((out / "results.json").read_text()) == before
    assert (out / "results.md").is_file() and "### UA" in proc.stdout


def test_jobs_run_the_chains_side_by_side_with_the_same_results(pretrained_ckpt, synth_folds, tmp_path,
                                                                 monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    calls, lock = [], threading.Lock()

    def serialised(argv, log_path, cwd=None, *, report=None, env=None):
        calls.append((threading.current_thread().name, dict(env or {})))
        with lock:   # fairseq in this process is not thread-safe (a real run's commands are subprocesses)
            return inprocess.run_logged(argv, log_path, cwd, report=report)

    monkeypatch.setattr(stages, "run_logged", serialised)
    cv(synth_folds, pretrained_ckpt, tmp_path / "one", *TINY, runs=1)
    assert [env for _, env in calls] == [{}, {}]
    calls.clear()
    proc = cv(synth_folds, pretrained_ckpt, tmp_path / "two", "--jobs", "2", *TINY, runs=1)
    assert "== 2 method x fold chains, 2 at a time" in proc.stdout
    assert len({thread for thread, _ in calls}) == 2   # one worker per fold
    threads = str(max(1, os.cpu_count() // 2))
    assert [env for _, env in calls] == [{"OMP_NUM_THREADS": threads}] * 2
    # epoch lines carry no stage name: the chain's is put in front
    assert re.search(r"^\[vft/fold1\] \[valid\] epoch 001 \|", proc.stdout, re.M)
    assert re.search(r"^\[vft/fold2\] \[valid\] epoch 001 \|", proc.stdout, re.M)
    one, two = (json.loads((tmp_path / d / "results.json").read_text())["methods"]["vft"] for d in ("one", "two"))
    assert list(two["per_fold"]) == ["fold1", "fold2"]   # in fold order, whichever finished first
    for fold in ("fold1", "fold2"):   # the same runs (scores: this process's fairseq is shared by the threads)
        record = json.loads((tmp_path / "two" / "vft" / fold / "run1" / "metrics.json").read_text())
        assert record["seed"] == 1 and record["fold"] == fold
        assert two["per_fold"][fold]["ua"]["runs"] == [100 * record["ua"]]
        assert one["per_fold"][fold].keys() == two["per_fold"][fold].keys()


def test_tapt_and_ptapt_on_one_fold_with_scoped_overrides(pretrained_ckpt, synth_folds, tmp_path):
    root = tmp_path / "one_fold"
    root.mkdir()
    (root / "fold1").symlink_to(synth_folds / "fold1", target_is_directory=True)
    out = tmp_path / "cv"
    proc = cv(root, pretrained_ckpt, out, "--ks", "4", "8", *TINY,
              "tapt:task.min_sample_size=4000", "tapt:dataset.max_tokens=200000", "tapt:optimization.update_freq=[1]",
              "ptapt:dataset.max_tokens=160000", "ptapt:model.head_dim=32", "optimization.max_update=2",
              method="tapt,ptapt", runs=1)
    assert started(proc.stdout) == ["tapt/fold1/tapt", "tapt/fold1/run1", "ptapt/fold1/ptapt_stage1",
                                    "ptapt/fold1/pseudo_labels", "ptapt/fold1/ptapt", "ptapt/fold1/run1"]
    assert sorted(p.name for p in (out / "tapt/fold1/tapt").glob("*.pt")) == ["checkpoint_last.pt"]
    assert sorted(p.name for p in (out / "ptapt/fold1/ptapt_stage1").glob("*.pt")) == ["checkpoint_best.pt"]
    labels = out / "ptapt/fold1/pseudo_labels"
    assert (labels / "train.km4").is_file() and (labels / "valid.km8").is_file()
    assert not (labels / "test.km4").exists()     # the adaptation never reads the test audio
    assert not (labels / "features").exists()     # dumped features removed once labels exist

    # ptapt:model.head_dim reached P-TAPT (the other yamls lack the key: Hydra would have failed)
    ptapt = out / "ptapt/fold1/ptapt"
    state = torch.load(ptapt / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["model"]["head_dim"] == 32 and state["model"]["heads.1.2.weight"].shape == (8, 32)
    assert state["optimizer_history"][-1]["num_updates"] == 2   # a plain override reaches every stage
    argv = json.loads((ptapt / "done.json").read_text())["argv"]
    assert "task.cluster_labels=[km4,km8]" in argv and f"task.label_dir={labels}" in argv
    run = json.loads((out / "ptapt/fold1/run1/done.json").read_text())
    assert run["settings"]["start"] == str(ptapt / "checkpoint_last.pt")
    assert not any("head_dim" in a or "min_sample_size" in a for a in run["argv"])
    tapt_run = json.loads((out / "tapt/fold1/run1/done.json").read_text())
    assert tapt_run["settings"]["start"] == str(out / "tapt/fold1/tapt/checkpoint_last.pt")

    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["tapt", "ptapt"] and results["folds"] == ["fold1"]
    summary = (out / "results.md").read_text().split("###")[1]
    assert "| TAPT + V-FT |" in summary and "| P-TAPT + V-FT |" in summary
    for m in results["methods"].values():
        assert np.array(m["confusion_matrix"]["matrix"]).sum() == n_test(synth_folds / "fold1")


def test_bad_input(synth_folds, tmp_path, capsys):
    w2v = tmp_path / "w2v.pt"
    w2v.write_bytes(b"not read before the folds are checked")

    def fails(*args, folds=synth_folds, method="vft"):
        code = main(["cv", "--methods", method, "--manifests", str(folds), "--checkpoint", str(w2v),
                     "--out", str(tmp_path / "out"), "--config-dir", str(REPO / "config"), *args])
        assert code == 2
        return capsys.readouterr().err

    assert "unknown method foo: choose from vft, tapt, ptapt" in fails(method="vft,foo")
    broken = tmp_path / "folds"
    shutil.copytree(synth_folds / "fold1", broken / "fold1")
    shutil.copytree(synth_folds / "fold2", broken / "fold2")
    (broken / "fold2" / "valid.emo").unlink()
    err = fails(folds=broken)
    assert f"{broken / 'fold2' / 'valid.emo'}: missing from fold 'fold2'" in err
    (broken / "fold2" / "dict.emo.txt").unlink()
    shutil.copy(synth_folds / "fold2" / "valid.emo", broken / "fold2" / "valid.emo")
    assert str(broken / "fold2" / "dict.emo.txt") in fails(folds=broken)
    empty = tmp_path / "empty"
    (empty / "audio_cache").mkdir(parents=True)
    assert f"{empty}: no fold folders here" in fails(folds=empty)
    assert "unknown stage 'vtf'" in fails("vtf:model.pooling=mean")
    assert "use --checkpoint" in fails("model.w2v_path=/x.pt")
    assert f"{tmp_path / 'missing.pt'}: checkpoint not found" in fails("--stage1-checkpoint", str(tmp_path / "missing.pt"))
    assert not (tmp_path / "out").exists()


def test_overrides_scoping():
    o = Overrides.parse(["a.b=1", "vft:model.x=2", "ptapt_stage1:+c.d=e:f", "distributed_training.distributed_world_size=8",
                         "model.path=/x:y"])
    assert o.for_stage("vft") == ["a.b=1", "distributed_training.distributed_world_size=8", "model.path=/x:y",
                                  "model.x=2"]
    assert o.for_stage("ptapt_stage1")[-1] == "+c.d=e:f"
    assert o.for_stage("tapt") == o.common
    with pytest.raises(SerError, match="expected key=value"):
        Overrides.parse(["vft:model.x"])
    with pytest.raises(SerError, match="use --seed"):
        Overrides.parse(["tapt:common.seed=3"])


def test_fold_and_run_spreads_follow_the_reference_definitions():
    def record(ua, run):
        return {"ua": ua, "wa": ua, "macro_f1": ua, "run": run, "seed": run, "path": "", "classes": ["a", "b"],
                "confusion_matrix": [[1, 0], [0, 1]]}

    # runs x folds (UA in %): run 1: 60, 70; run 2: 64, 80
    runs = {"f1": [record(0.60, 1), record(0.64, 2)], "f2": [record(0.70, 1), record(0.80, 2)]}
    results = aggregate({"vft": runs}, {"vft": "V-FT"})
    avg = results["methods"]["vft"]["average"]["ua"]
    assert avg["mean"] == pytest.approx(68.5)
    assert avg["fold_std"] == pytest.approx((5 + 8) / 2)       # std across folds, mean over runs
    assert avg["run_std"] == pytest.approx(abs(65 - 72) / 2)   # std across runs of the fold average
    assert results["methods"]["vft"]["per_fold"]["f2"]["ua"]["std"] == pytest.approx(5)
    assert "| V-FT | 62.0 ± 2.0 | 75.0 ± 5.0 | 68.5 | 6.5 | 3.5 |" in tables_markdown(results)
    # classes are matched by name when folds order them differently
    runs["f2"][0]["classes"] = ["b", "a"]
    runs["f2"][0]["confusion_matrix"] = [[3, 0], [1, 0]]
    cm = aggregate({"vft": runs}, {"vft": "V-FT"})["methods"]["vft"]["confusion_matrix"]
    assert cm["classes"] == ["a", "b"] and cm["matrix"] == [[3, 1], [0, 6]]


NAMES = {"vft": "V-FT", "tapt": "TAPT + V-FT", "ptapt": "P-TAPT + V-FT"}


def results_with(ua_per_run):
    """aggregate()'s dict for method -> [UA of run 1, run 2, ...] (in %), the same on both folds."""
    def record(ua, run):
        return {"ua": ua / 100, "wa": ua / 100, "macro_f1": ua / 100, "run": run, "seed": run, "path": "",
                "classes": ["a", "b"], "confusion_matrix": [[1, 0], [0, 1]]}

    records = {m: {f: [record(ua, r) for r, ua in enumerate(values, start=1)] for f in ("f1", "f2")}
               for m, values in ua_per_run.items()}
    return aggregate(records, {m: NAMES[m] for m in records})


def test_verdict_tells_differences_beyond_the_run_spread():
    # V-FT 60 ± 1 (run-std 1), TAPT 61 ± 1: +1 < 2 x 1; P-TAPT 70 ± 2: +10 > 2 x 2, and +9 over TAPT
    lines = verdict_lines(results_with({"vft": [59, 61], "tapt": [60, 62], "ptapt": [68, 72]}))
    assert lines[0].startswith("Verdict (UA; a difference counts when it exceeds 2 x the larger run-std")
    assert lines[1:] == [
        "- TAPT + V-FT vs V-FT: +1.0 UA points, within the run-to-run spread (run-std 1.0): "
        "not distinguishable at this size",
        "- P-TAPT + V-FT vs V-FT: +10.0 UA points, beyond the run-to-run spread (run-std 2.0): "
        "P-TAPT + V-FT is better at this size",
        "- P-TAPT + V-FT vs TAPT + V-FT: +9.0 UA points, beyond the run-to-run spread (run-std 2.0): "
        "P-TAPT + V-FT is better at this size"]


def test_verdict_threshold_is_twice_the_larger_run_std_in_either_direction():
    # V-FT 60 (run-std 2): +3.9 is within 2 x 2, +4.1 beyond; a worse method is named as such
    below = verdict_lines(results_with({"vft": [58, 62], "tapt": [63.9, 63.9]}))
    assert below[1].endswith("+3.9 UA points, within the run-to-run spread (run-std 2.0): "
                             "not distinguishable at this size")
    above = verdict_lines(results_with({"vft": [58, 62], "tapt": [64.1, 64.1]}))
    assert above[1].endswith("+4.1 UA points, beyond the run-to-run spread (run-std 2.0): "
                             "TAPT + V-FT is better at this size")
    worse = verdict_lines(results_with({"vft": [69, 71], "tapt": [60, 62]}))  # -9 vs 2 x 1
    assert worse[1] == ("- TAPT + V-FT vs V-FT: -9.0 UA points, beyond the run-to-run spread (run-std 1.0): "
                        "V-FT is better at this size")
    # another metric and factor
    lines = verdict_lines(results_with({"vft": [59, 61], "tapt": [60, 62]}), key="macro_f1", factor=0.25)
    assert "macro-F1" in lines[0] and "0.25 x" in lines[0] and "beyond" in lines[1]


def test_verdict_with_one_run_says_the_spread_is_unknown():
    lines = verdict_lines(results_with({"vft": [60], "tapt": [75], "ptapt": [61]}))
    assert "spread is unknown" in lines[0]
    assert lines[1:] == ["- TAPT + V-FT vs V-FT: +15.0 UA points, spread unknown: no verdict",
                         "- P-TAPT + V-FT vs V-FT: +1.0 UA points, spread unknown: no verdict",
                         "- P-TAPT + V-FT vs TAPT + V-FT: -14.0 UA points, spread unknown: no verdict"]
    assert not any("distinguishable" in line or "better" in line for line in lines)


def test_verdict_pairs():
    assert verdict_lines(results_with({"vft": [60, 61]})) == []   # nothing to compare
    lines = verdict_lines(results_with({"tapt": [60, 61], "ptapt": [70, 71]}))   # no V-FT: P-TAPT vs TAPT only
    assert len(lines) == 2 and lines[1].startswith("- P-TAPT + V-FT vs TAPT + V-FT: +10.0")

"""``fairseq-ser cv --label-fractions ... --unlabelled ...``: the low-resource curve end to end, in-process.

Every method at 2 labelled fractions x 1 fold x 1 run, with extra unlabelled
audio: which stage runs where and on what audio, the curve's table and figure
against the runs' metrics.json, and an interrupted fraction redone alone.
The stage commands run in this process (tests/inprocess.py), as in test_cv.py.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

import inprocess
from commands import CPU_VFT
from fairseq_ser.data.manifest import read_manifest
from fairseq_ser.experiments import stages

TINY = CPU_VFT + ["optimization.max_update=2"]
ADAPT = ["tapt:task.min_sample_size=4000", "tapt:dataset.max_tokens=200000", "tapt:optimization.update_freq=[1]",
         "ptapt:dataset.max_tokens=160000", "ptapt:model.head_dim=32"]


@pytest.fixture(autouse=True)
def stages_in_process(monkeypatch):
    monkeypatch.setattr(stages, "run_logged", inprocess.run_logged)


def started(stdout):
    return re.findall(r"^\[(\S+)\] .*: running", stdout, re.M)


def argv_of(stage_dir):
    return json.loads((stage_dir / "done.json").read_text())["argv"]


def data_of(stage_dir):
    return next(a.split("=", 1)[1] for a in argv_of(stage_dir) if a.startswith("task.data="))


def audio_files(data_dir, split="train"):
    manifest = read_manifest(os.path.join(data_dir, f"{split}.tsv"))
    return {os.path.realpath(manifest.audio_path(i)) for i in range(len(manifest))}


def test_every_method_at_two_fractions_with_unlabelled_audio(pretrained_ckpt, synth_folds, synth_corpus, tmp_path):
    root = tmp_path / "folds"
    root.mkdir()
    (root / "fold1").symlink_to(synth_folds / "fold1", target_is_directory=True)
    fold = synth_folds / "fold1"
    test_files = audio_files(fold, "test")
    valid_files = audio_files(fold, "valid")
    # extra audio: two new recordings, a copy of a test utterance under another name (must be left out)
    extra = tmp_path / "extra"
    extra.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(extra / f"new{i}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000,
                 subtype="PCM_16")
    shutil.copy(sorted(test_files)[0], extra / "copy_of_a_test_utterance.wav")

    out = tmp_path / "cv"

    def cv(*extra_args):
        return inprocess.run_command(
            ["fairseq-ser", "cv", "--methods", "vft,tapt,ptapt", "--manifests", root, "--checkpoint", pretrained_ckpt,
             "--runs", "1", "--out", out, "--no-progress", "--label-fractions", "0.5,1", "--unlabelled", extra,
             "--ks", "4", "8", *TINY, *ADAPT, *extra_args])

    proc = cv()
    assert started(proc.stdout) == [
        "vft/fold1/frac0.5/run1", "vft/fold1/frac1/run1",
        "tapt/fold1/tapt", "tapt/fold1/frac0.5/run1", "tapt/fold1/frac1/run1",
        "ptapt/fold1/frac0.5/ptapt_stage1", "ptapt/fold1/frac0.5/pseudo_labels", "ptapt/fold1/frac0.5/ptapt",
        "ptapt/fold1/frac0.5/run1",
        "ptapt/fold1/frac1/ptapt_stage1", "ptapt/fold1/frac1/pseudo_labels", "ptapt/fold1/frac1/ptapt",
        "ptapt/fold1/frac1/run1"]

    # the label-free stages train on all the training audio plus the new recordings, never on valid/test
    adaptation = out / "adaptation" / "fold1"
    adapted = audio_files(adaptation)
    new = {os.path.realpath(p) for p in (out / "unlabelled").rglob("*.wav")} | \
        {os.path.realpath(extra / f"new{i}.wav") for i in range(2)}
    assert audio_files(fold) < adapted
    assert len(adapted - audio_files(fold)) == 2 and (adapted - audio_files(fold)) <= new
    assert not adapted & (test_files | valid_files)
    assert data_of(out / "tapt/fold1/tapt") == str(adaptation)
    for frac in ("frac0.5", "frac1"):
        where = out / "ptapt/fold1" / frac
        assert data_of(where / "ptapt") == str(adaptation)
        labels = where / "pseudo_labels"
        assert len((labels / "train.km4").read_text().splitlines()) == len(adapted)
        assert not (labels / "test.km4").exists()
        # stage 1 and V-FT see the labelled subset only
        subset = out / "subsets" / frac / "fold1"
        assert data_of(where / "ptapt_stage1") == str(subset)
        for method in ("vft", "tapt", "ptapt"):
            assert data_of(out / method / "fold1" / frac / "run1") == str(subset)
        assert audio_files(subset) <= audio_files(fold)
    half, full = (len(read_manifest(str(out / "subsets" / f / "fold1" / "train.tsv"))) for f in ("frac0.5", "frac1"))
    assert full == len(read_manifest(str(fold / "train.tsv"))) and abs(half - full / 2) <= 4   # 4 classes, rounding
    assert audio_files(out / "subsets/frac0.5/fold1") < audio_files(out / "subsets/frac1/fold1")

    # the table and the figure agree with every run's metrics.json
    results = json.loads((out / "results.json").read_text())
    assert results["fractions"] == [0.5, 1.0]
    md = (out / "results.md").read_text()
    for method, name in (("vft", "V-FT"), ("tapt", "TAPT + V-FT"), ("ptapt", "P-TAPT + V-FT")):
        for key, label in (("ua", "UA"), ("wa", "WA"), ("macro_f1", "macro-F1")):
            values = [100 * json.loads((out / method / "fold1" / f / "run1/metrics.json").read_text())[key]
                      for f in ("frac0.5", "frac1")]
            assert results["methods"][method][key]["mean"] == pytest.approx(values)
            table = md.split(f"### {label} by labelled fraction")[1]
            row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
            assert row == f"| {name} | {values[0]:.1f} | {values[1]:.1f} |"
        assert (out / "by_fraction/frac0.5/results.md").is_file()
    assert (out / "low_resource.png").read_bytes()[:4] == b"\x89PNG"

    # an interrupted fraction is redone alone: P-TAPT pretraining of 50 % and what follows it
    for name in ("done.json", "checkpoint_last.pt"):
        (out / "ptapt/fold1/frac0.5/ptapt" / name).unlink()
    for name in ("done.json", "metrics.json", "checkpoint_best.pt"):
        (out / "ptapt/fold1/frac0.5/run1" / name).unlink()
    proc = cv()
    assert started(proc.stdout) == ["ptapt/fold1/frac0.5/ptapt", "ptapt/fold1/frac0.5/run1"]
    assert json.loads((out / "results.json").read_text())["methods"]["vft"] == results["methods"]["vft"]

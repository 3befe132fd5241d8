"""V-FT through the real commands, as the README gives them, then ``fairseq-ser evaluate``; bad inputs in-process."""

import json
import shutil

import pytest
import torch

from fairseq_ser.data.manifest import read_label_dict

import inprocess
from commands import CPU_VFT, REPO, hydra_train, run_command


@pytest.mark.e2e
def test_vft_from_cfg_checkpoint_then_evaluate(trained_ckpt, synth_folds, tmp_path):
    fold = synth_folds / "fold1"
    # a private copy of the pretrained model, deleted after training: the
    # fine-tuned checkpoint must load without it
    w2v = tmp_path / "w2v.pt"
    shutil.copy(trained_ckpt, w2v)
    save = tmp_path / "vft"
    proc = run_command(hydra_train("vft", fold, w2v, save, *CPU_VFT))
    log = proc.stdout + proc.stderr
    assert "valid on 'valid' subset" in log and "| ua " in log and "macro_f1" in log
    best = save / "checkpoint_best.pt"
    assert best.is_file()
    w2v.unlink()

    state = torch.load(best, weights_only=True)
    assert state["cfg"]["model"]["class_names"] == read_label_dict(str(fold / "dict.emo.txt"))
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == "wav2vec2"
    assert state["cfg"]["checkpoint"]["best_checkpoint_metric"] == "ua"

    results = tmp_path / "eval"
    proc = run_command(["fairseq-ser", "evaluate", fold, "--checkpoint", best, "--gen-subset", "test",
                        "--results-path", results])
    for heading in ("UA", "WA", "macro-F1", "confusion matrix", "recall"):
        assert heading in proc.stdout
    metrics = json.loads((results / "metrics.json").read_text())
    n_test = len((fold / "test.tsv").read_text().splitlines()) - 1
    assert metrics["num_utterances"] == n_test
    assert 0.0 <= metrics["ua"] <= 1.0 and 0.0 <= metrics["wa"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == n_test
    rows = (results / "predictions.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:4] == ["id", "path", "reference", "prediction"]
    assert len(rows) == n_test + 1
    probs = [float(x) for x in rows[1].split("\t")[4:]]
    assert len(probs) == 4 and abs(sum(probs) - 1.0) < 1e-3
    assert (results / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_vft_from_legacy_checkpoint_outside_the_repo(legacy_ckpt, synth_folds, tmp_path):
    """From another working directory with an absolute config dir, with the non-default options.

    A subprocess of its own: from elsewhere, ``common.user_dir: fairseq_ser``
    must resolve to the installed package, which only a fresh process imports.
    """
    work = tmp_path / "elsewhere"
    work.mkdir()
    save = tmp_path / "vft_legacy"
    run_command(hydra_train("vft", synth_folds / "fold2", legacy_ckpt, save, *CPU_VFT,
                            "model.pooling=attentive_stats", "model.weighted_layer_sum=true",
                            "model.freeze_finetune_updates=2", config_dir=REPO / "config"), cwd=work)
    state = torch.load(save / "checkpoint_best.pt", weights_only=True)
    assert "layer_weights" in state["model"]
    assert any(k.startswith("pooling.attention") for k in state["model"])
    assert not (work / "fairseq_ser").exists()
    proc = run_command(["fairseq-ser", "evaluate", synth_folds / "fold2", "--checkpoint", save / "checkpoint_best.pt",
                        "--gen-subset", "valid"], cwd=work)
    assert "UA" in proc.stdout
    assert json.loads((save / "eval-valid" / "metrics.json").read_text())["subset"] == "valid"


def test_training_reports_bad_w2v_path(synth_folds, tmp_path):
    proc = inprocess.run_command(hydra_train("vft", synth_folds / "fold1", tmp_path / "missing.pt",
                                             tmp_path / "out", *CPU_VFT), expect_ok=False)
    assert proc.returncode != 0
    assert "missing.pt: checkpoint not found" in proc.stderr


def test_evaluate_rejects_a_checkpoint_that_is_not_a_classifier(pretrained_ckpt, synth_folds):
    proc = inprocess.run_command(["fairseq-ser", "evaluate", synth_folds / "fold1", "--checkpoint", pretrained_ckpt],
                                 expect_ok=False)
    assert proc.returncode == 2
    assert "not an emotion classifier" in proc.stderr and str(pretrained_ckpt) in proc.stderr

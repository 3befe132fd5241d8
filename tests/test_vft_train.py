"""V-FT through the real commands, as the README gives them, then ``fairseq-ser evaluate``."""

import json
import shutil

import torch

from fairseq_ser.data.manifest import read_label_dict

from conftest import CPU_VFT, REPO, run_command


def train_vft(data_dir, w2v_path, save_dir, cwd=REPO, config_dir="config", extra=(), expect_ok=True):
    return run_command(
        ["fairseq-hydra-train", "--config-dir", config_dir, "--config-name", "vft",
         f"task.data={data_dir}", f"model.w2v_path={w2v_path}", f"checkpoint.save_dir={save_dir}",
         *CPU_VFT, *extra],
        cwd=cwd, expect_ok=expect_ok)


def test_vft_from_cfg_checkpoint_then_evaluate(pretrained_ckpt, synth_folds, tmp_path):
    fold = synth_folds / "fold1"
    # a private copy of the pretrained model, deleted after training: the
    # fine-tuned checkpoint must load without it
    w2v = tmp_path / "w2v.pt"
    shutil.copy(pretrained_ckpt, w2v)
    save = tmp_path / "vft"
    proc = train_vft(fold, w2v, save)
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
    proc = run_command(["fairseq-ser", "evaluate", fold, "--path", best, "--gen-subset", "test",
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


def test_vft_from_legacy_checkpoint_outside_the_repo(legacy_ckpt, synth_folds, tmp_path):
    """From another working directory with an absolute config dir, with the non-default options."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    save = tmp_path / "vft_legacy"
    train_vft(synth_folds / "fold2", legacy_ckpt, save, cwd=work, config_dir=REPO / "config",
              extra=["model.pooling=attentive_stats", "model.weighted_layer_sum=true",
                     "model.freeze_finetune_updates=2"])
    state = torch.load(save / "checkpoint_best.pt", weights_only=True)
    assert "layer_weights" in state["model"]
    assert any(k.startswith("pooling.attention") for k in state["model"])
    assert not (work / "fairseq_ser").exists()
    proc = run_command(["fairseq-ser", "evaluate", synth_folds / "fold2", "--path", save / "checkpoint_best.pt",
                        "--gen-subset", "valid"], cwd=work)
    assert "UA" in proc.stdout
    assert json.loads((save / "eval-valid" / "metrics.json").read_text())["subset"] == "valid"


def test_training_reports_bad_w2v_path(synth_folds, tmp_path):
    proc = train_vft(synth_folds / "fold1", tmp_path / "missing.pt", tmp_path / "out", expect_ok=False)
    assert proc.returncode != 0
    assert "missing.pt: checkpoint not found" in proc.stderr


def test_evaluate_rejects_a_checkpoint_that_is_not_a_classifier(pretrained_ckpt, synth_folds):
    proc = run_command(["fairseq-ser", "evaluate", synth_folds / "fold1", "--path", pretrained_ckpt],
                       expect_ok=False)
    assert proc.returncode == 2
    assert "not an emotion classifier" in proc.stderr and str(pretrained_ckpt) in proc.stderr

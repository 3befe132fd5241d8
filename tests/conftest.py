"""Shared fixtures: the generated corpus, its fold manifests and tiny wav2vec 2.0 checkpoints.

Everything is made here, at small scale: a synthetic emotional-speech corpus
(fairseq_ser.data.synthetic), its speaker-independent manifests (the real
``prepare folder`` code) and checkpoints of a tiny wav2vec 2.0
(config/pretrain_tiny.yaml).

The tests come in two layers (pytest.ini): the fast one, in-process, and the
``e2e`` one, which runs the console commands as subprocesses. Fast tests get
checkpoints made in-process (:mod:`checkpoints`): ``pretrained_ckpt`` is the
untrained model saved as fairseq's trainer saves it, ``classifier_ckpt`` a
V-FT classifier on it saved by fairseq's ``Trainer``. ``trained_ckpt``, the
same model pretrained for a few updates by a real ``fairseq-hydra-train`` run
of fairseq's ``audio_pretraining`` task, is for the e2e tests only.
"""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import commands  # noqa: E402  (the test helpers live beside this file)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before the test's fixtures are made: commands.run_command checks the marker of the test it runs for
    commands.current_test = item


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    from fairseq_ser.data.synthetic import generate_corpus

    out = tmp_path_factory.mktemp("synth")
    generate_corpus(str(out), num_speakers=4, utterances_per_class=4, seed=0,
                    min_seconds=0.8, max_seconds=1.6, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_folds(synth_corpus, tmp_path_factory):
    """Two speaker-independent folds of the synthetic corpus; returns the folder holding fold1, fold2."""
    from fairseq_ser.data.corpora.custom import prepare_folder

    out = tmp_path_factory.mktemp("manifests") / "synth"
    prepare_folder(str(synth_corpus), str(out), speaker_regex=r"^(spk\d+)_", folds=2, progress=False)
    return out


@pytest.fixture(scope="session")
def pretrained_ckpt(tmp_path_factory):
    """A cfg-layout wav2vec 2.0 pretraining checkpoint (config/pretrain_tiny.yaml, untrained), made in-process."""
    from checkpoints import make_wav2vec2

    return Path(make_wav2vec2(str(tmp_path_factory.mktemp("pretrain") / "checkpoint_last.pt")))


@pytest.fixture(scope="session")
def trained_ckpt(synth_folds, tmp_path_factory):
    """The same model pretrained for 4 updates by ``fairseq-hydra-train`` itself (e2e tests only)."""
    save_dir = tmp_path_factory.mktemp("pretrain_trained")
    commands.run_command(["fairseq-hydra-train", "--config-dir", "config", "--config-name", "pretrain_tiny",
                          f"task.data={synth_folds / 'fold1'}", f"checkpoint.save_dir={save_dir}",
                          "optimization.max_update=4", "common.log_interval=1"])
    path = save_dir / "checkpoint_last.pt"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def legacy_ckpt(pretrained_ckpt, tmp_path_factory):
    from checkpoints import to_legacy_args_layout

    return Path(to_legacy_args_layout(str(pretrained_ckpt), str(tmp_path_factory.mktemp("legacy") / "w2v_legacy.pt")))


@pytest.fixture(scope="session")
def ctc_ckpt(pretrained_ckpt, tmp_path_factory):
    import fairseq_ser
    from checkpoints import make_ctc_finetuned

    fairseq_ser.register()
    return Path(make_ctc_finetuned(str(pretrained_ckpt), str(tmp_path_factory.mktemp("ctc") / "w2v_ctc.pt")))


@pytest.fixture(scope="session")
def classifier_ckpt(pretrained_ckpt, synth_folds, tmp_path_factory):
    """A V-FT emotion classifier (fold1's 4 classes) on ``pretrained_ckpt``, saved by fairseq's Trainer in-process."""
    from checkpoints import make_classifier

    out = tmp_path_factory.mktemp("classifier") / "checkpoint_best.pt"
    return Path(make_classifier(str(pretrained_ckpt), str(synth_folds / "fold1"), str(out)))


@pytest.fixture(scope="session")
def stage1_run(trained_ckpt, synth_folds, tmp_path_factory):
    """P-TAPT stage 1 by the real command on fold1 under bf16 (e2e tests only); (save_dir, its output).

    It starts from a private copy of ``trained_ckpt``, deleted after
    training: the checkpoint must load without it. The P-TAPT chain
    (test_ptapt.py) goes on from it; test_ptapt_stage1.py checks it.
    """
    work = tmp_path_factory.mktemp("stage1")
    w2v = work / "backbone.pt"
    shutil.copy(trained_ckpt, w2v)
    save = work / "stage1"
    proc = commands.run_command(commands.hydra_train("ptapt_stage1", synth_folds / "fold1", w2v, save,
                                                     *commands.CPU_STAGE1, *commands.BF16))
    w2v.unlink()
    return save, proc.stdout + proc.stderr

"""Shared fixtures: the generated corpus, its fold manifests and tiny wav2vec 2.0 checkpoints.

Everything is made here, at small scale: a synthetic emotional-speech corpus
(fairseq_ser.data.synthetic), its speaker-independent manifests (the real
``prepare folder`` code), and a wav2vec 2.0 pretrained for a few updates by a
real ``fairseq-hydra-train`` run of fairseq's ``audio_pretraining`` task.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EMODB = REPO.parent / "shared" / "corpora" / "emodb"

sys.path.insert(0, str(Path(__file__).parent))

# Overrides that make config/vft.yaml run in seconds on a CPU.
CPU_VFT = [
    "common.cpu=true",
    "common.fp16=false",
    "common.log_interval=1",
    "dataset.num_workers=0",
    "dataset.batch_size=8",
    "optimization.max_update=6",
]


def run_command(argv, cwd=REPO, timeout=600, expect_ok=True):
    """Run a console command of the venv; on an unexpected exit code, fail showing its output."""
    exe = BIN / argv[0]
    cmd = [str(exe) if exe.exists() else argv[0]] + [str(a) for a in argv[1:]]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


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
def pretrained_ckpt(synth_folds, tmp_path_factory):
    """A cfg-layout wav2vec 2.0 pretraining checkpoint written by fairseq-hydra-train itself."""
    save_dir = tmp_path_factory.mktemp("pretrain")
    run_command(["fairseq-hydra-train", "--config-dir", "config", "--config-name", "pretrain_tiny",
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
    """A V-FT emotion classifier (fold1's 4 classes) trained for a few updates by fairseq-hydra-train."""
    save_dir = tmp_path_factory.mktemp("classifier")
    run_command(["fairseq-hydra-train", "--config-dir", "config", "--config-name", "vft",
                 f"task.data={synth_folds / 'fold1'}", f"model.w2v_path={pretrained_ckpt}",
                 f"checkpoint.save_dir={save_dir}", *CPU_VFT])
    path = save_dir / "checkpoint_best.pt"
    assert path.is_file()
    return path

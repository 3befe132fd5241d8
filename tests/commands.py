"""The console commands as the tests run them: CPU overrides, argv of each stage, the subprocess runner.

Two layers use them (see pytest.ini's markers):

- the ``e2e`` tests run ``fairseq-hydra-train`` and ``fairseq-ser`` as
  subprocesses with :func:`run_command`, as a user does: one chain per
  method;
- the other tests run the same argv in the test process with
  ``inprocess.run_command``, which skips the ~8 s each subprocess spends
  importing torch and fairseq.

:func:`run_command` refuses to start a subprocess for a test that is not
marked ``e2e``, so the fast layer stays free of them as tests are added.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Overrides that make config/vft.yaml run in seconds on a CPU.
CPU_VFT = [
    "common.cpu=true",
    "common.fp16=false",
    "common.log_interval=1",
    "dataset.num_workers=0",
    "dataset.batch_size=8",
    "optimization.max_update=6",
]

# Overrides that make config/tapt.yaml run in seconds on a CPU.
CPU_TAPT = [
    "common.cpu=true",
    "common.fp16=false",
    "common.log_interval=1",
    "dataset.num_workers=0",
    "dataset.batch_size=8",
    "dataset.max_tokens=200000",
    "optimization.update_freq=[1]",
    "optimization.max_update=4",
    "lr_scheduler.warmup_updates=1",
    "task.min_sample_size=4000",  # the synthetic clips are 0.8 to 1.6 s
]

# Overrides that make config/ptapt_stage1.yaml run in seconds on a CPU.
CPU_STAGE1 = [
    "common.cpu=true",
    "common.fp16=false",
    "common.log_interval=1",
    "dataset.num_workers=0",
    "dataset.batch_size=8",
    "optimization.max_update=4",
]

# fairseq's bf16 training: the CPU stand-in for the fp16 of the GPU configs
BF16 = ["common.fp16=false", "common.bf16=true"]


def hydra_train(config, data_dir, w2v_path, save_dir, *overrides, config_dir="config"):
    """The README's ``fairseq-hydra-train`` command line of stage ``config`` (vft, tapt, ptapt_stage1, ptapt)."""
    return ["fairseq-hydra-train", "--config-dir", str(config_dir), "--config-name", config,
            f"task.data={data_dir}", f"model.w2v_path={w2v_path}", f"checkpoint.save_dir={save_dir}",
            *map(str, overrides)]


# the test being run, set by conftest before its fixtures: what run_command checks the marker of
current_test = None


def run_command(argv, cwd=REPO, timeout=600, expect_ok=True):
    """Run a console command of the venv as a subprocess; on an unexpected exit code, fail showing its output.

    Only for tests marked ``e2e`` (and the fixtures they use): the others run
    commands with ``inprocess.run_command``.
    """
    if current_test is not None and current_test.get_closest_marker("e2e") is None:
        pytest.fail(f"{current_test.nodeid} runs {argv[0]} as a subprocess but is not marked e2e: "
                    "mark it @pytest.mark.e2e, or run the command with inprocess.run_command", pytrace=False)
    exe = BIN / argv[0]
    cmd = [str(exe) if exe.exists() else argv[0]] + [str(a) for a in argv[1:]]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def logged_losses(log):
    """Every training loss fairseq printed (``loss=`` in train_inner / train lines)."""
    return [float(v) for v in re.findall(r"\bloss[= ]+(-?[0-9.]+|nan|inf)", log)]


def assert_finite_training(proc, what):
    """A training command's output shows losses, all finite, and that it ran under bf16."""
    log = proc.stdout + proc.stderr
    losses = logged_losses(log)
    assert losses, f"{what}: no loss in the log\n{log[-3000:]}"
    assert all(math.isfinite(v) for v in losses), f"{what}: non-finite losses {losses}"
    assert "bf16" in log or "bfloat16" in log.lower() or "'bf16': True" in log, f"{what}: did not run in bf16"

"""The console commands, run inside the test process instead of as subprocesses.

A subprocess of ``fairseq-hydra-train`` or ``fairseq-ser`` spends about 8 s
importing torch and fairseq before it does anything; the tiny trainings of
the tests take a few seconds more. These helpers run the same argv in-process
and return what a subprocess would have: an exit status and its output.

- :func:`hydra_train`: ``fairseq-hydra-train --config-dir D --config-name N
  overrides...`` composed with Hydra's compose API and run by fairseq's own
  ``fairseq_cli.hydra_train._hydra_main`` (what ``hydra_main`` calls once
  Hydra has parsed the command line), in the working directory ``cwd``.
  fairseq's log lines are written in the format of the command's Hydra job
  logging (``[time][logger][LEVEL] - message``), so what parses the
  command's output parses these too.
- :func:`fairseq_ser`: ``fairseq-ser ...`` through ``fairseq_ser.cli.main.main``,
  its standard output and error captured, the log records it emits written
  to its error output as the command's ``logging.basicConfig`` would.
- :func:`run_logged`: a stand-in for ``fairseq_ser.experiments.stages.run_logged``
  that runs a stage's command with the two above.

State that outlives one run is reset around each: Hydra's global instance,
fairseq's best score of the previous run (kept as function attributes), its
metric aggregators (``fairseq_cli.train.main`` resets them itself), the root
logger's level and handlers, the working directory, environment variables
set for the run.
"""

import contextlib
import io
import logging
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from commands import REPO

# the console handler format of Hydra's default job logging, which fairseq-hydra-train uses
HYDRA_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# fairseq-ser's own (fairseq_ser/cli/main.py)
CLI_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"


@dataclass
class Completed:
    """What ``subprocess.run(..., capture_output=True, text=True)`` returns, for an in-process run."""

    args: list
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _logs_to(stream, fmt: str, level: int = logging.INFO):
    """Send every log record of ``level`` and above to ``stream`` while the block runs."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.setLevel(level)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, old_level))  # NOTSET (0) already lets everything through
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@contextlib.contextmanager
def _environment(cwd: Optional[str], env: Optional[Dict[str, Optional[str]]]):
    """Run in ``cwd`` with ``env`` applied (a None value unsets the variable); both restored afterwards."""
    old_cwd = os.getcwd()
    saved = {k: os.environ.get(k) for k in (env or {})}
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(old_cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _parse_hydra_argv(argv: Sequence[str]):
    """``--config-dir D --config-name N overrides...`` -> (D, N, overrides)."""
    config_dir = config_name = None
    overrides = []
    items = [str(a) for a in argv]
    i = 0
    while i < len(items):
        item = items[i]
        if item in ("--config-dir", "-cd", "--config-name", "-cn"):
            value = items[i + 1]
            i += 2
        elif item.startswith(("--config-dir=", "--config-name=")):
            item, value = item.split("=", 1)
            i += 1
        else:
            overrides.append(item)
            i += 1
            continue
        if item in ("--config-dir", "-cd"):
            config_dir = value
        else:
            config_name = value
    if config_dir is None or config_name is None:
        raise ValueError(f"expected --config-dir and --config-name in {items}")
    return config_dir, config_name, overrides


def _import_quietly(module: str):
    """Import ``module`` without the root handler that fairseq_cli.train adds at import time."""
    import importlib

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        return importlib.import_module(module)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)


def compose(config_dir: str, config_name: str, overrides: Sequence[str] = ()):
    """The config ``fairseq-hydra-train`` would run with (Hydra 1.1 semantics, as fairseq's hydra.main)."""
    from fairseq.dataclass.initialize import hydra_init
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    hydra_init(config_name)
    GlobalHydra.instance().clear()
    with warnings.catch_warnings(), \
            initialize_config_dir(config_dir=os.path.abspath(config_dir), version_base="1.1"):
        # what fairseq's hydra_init relies on (the yaml is checked against the schema stored under its name)
        warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
        return hydra_compose(config_name, overrides=list(overrides))


def use_imported_package(cfg) -> None:
    """Point ``common.user_dir`` at the fairseq_ser this process has imported.

    fairseq imports a user dir once per process and refuses a second package
    of the same name: from another working directory ``user_dir: fairseq_ser``
    resolves to the installed copy, which a fresh process would import but
    this one cannot.
    """
    import fairseq_ser
    from omegaconf import open_dict

    fairseq_ser.register()  # what importing the user dir does in a fresh process
    user_dir = cfg.common.get("user_dir")
    if user_dir and os.path.basename(os.path.normpath(str(user_dir))) == "fairseq_ser":
        with open_dict(cfg):
            cfg.common.user_dir = os.path.dirname(os.path.abspath(fairseq_ser.__file__))


def _forget_previous_runs() -> None:
    """Clear what fairseq keeps between runs of its trainer in one process as function attributes.

    ``checkpoint_utils.save_checkpoint.best`` (the best validation score so
    far, which decides whether checkpoint_best.pt is written) and
    ``should_stop_early``'s count; a fresh process starts without them.
    (fairseq_cli.train.main resets the metric aggregators itself.)
    """
    from fairseq import checkpoint_utils
    from fairseq_cli import train

    for function, names in ((checkpoint_utils.save_checkpoint, ("best",)),
                            (train.should_stop_early, ("best", "num_runs"))):
        for name in names:
            if hasattr(function, name):
                delattr(function, name)


def hydra_train(argv: Sequence[str], cwd: Optional[str] = None,
                env: Optional[Dict[str, Optional[str]]] = None) -> Completed:
    """``fairseq-hydra-train`` with ``argv`` (without the program name) in this process.

    The log goes to ``stdout``; an exception ends the run with exit status 1
    and its traceback in ``stderr``, as the command's would.
    """
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _environment(cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _logs_to(out, HYDRA_FORMAT):
        try:
            hydra_module = _import_quietly("fairseq_cli.hydra_train")
            _forget_previous_runs()
            cfg = compose(*_parse_hydra_argv(argv))
            use_imported_package(cfg)
            hydra_module._hydra_main(cfg)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # what the command would print before exiting 1
            traceback.print_exc(file=err)
            code = 1
        finally:
            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()
    return Completed(["fairseq-hydra-train", *map(str, argv)], code, out.getvalue(), err.getvalue())


def fairseq_ser(argv: Sequence[str], cwd: Optional[str] = None,
                env: Optional[Dict[str, Optional[str]]] = None) -> Completed:
    """``fairseq-ser`` with ``argv`` (without the program name) in this process."""
    from fairseq_ser.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with _environment(cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _logs_to(err, CLI_FORMAT):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc(file=err)
            code = 1
    return Completed(["fairseq-ser", *map(str, argv)], code, out.getvalue(), err.getvalue())


def run_command(argv: Sequence, cwd=REPO, env: Optional[Dict[str, Optional[str]]] = None,
                expect_ok: bool = True) -> Completed:
    """``fairseq-hydra-train ...`` or ``fairseq-ser ...`` in-process, in ``cwd`` with ``env`` set.

    Like ``commands.run_command`` otherwise: an unexpected exit status fails the test with the output.
    """
    import pytest

    name = os.path.basename(str(argv[0]))
    runners = {"fairseq-hydra-train": hydra_train, "fairseq-ser": fairseq_ser}
    if name not in runners:
        raise ValueError(f"no in-process runner for {argv[0]}")
    proc = runners[name](list(argv[1:]), cwd=str(cwd), env=env)
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(proc.args)} exited {proc.returncode} (in-process)\n--- stdout\n"
                    f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


# how a stage names its command (stages.console_command): a console script, or ``python -m MODULE``
_MODULES = {"fairseq_cli.hydra_train": "fairseq-hydra-train", "fairseq_ser.cli.main": "fairseq-ser"}
_RUNNERS = {"fairseq-hydra-train": hydra_train, "fairseq-ser": fairseq_ser}


def run_logged(argv: Sequence[str], log_path: str, cwd: Optional[str] = None, *, report=None,
               env: Optional[dict] = None) -> float:
    """``fairseq_ser.experiments.stages.run_logged``, running the stage's command in this process.

    Monkeypatch it over the real one. Same contract (but ``env`` is not applied: the
    command runs in this process, which is not safe from several threads): the output goes to
    ``log_path`` after a ``$ argv`` line, the epoch summaries that
    ``stages.epoch_summary`` picks out of it go to ``report``, a failure
    raises ``SerError`` with the log's last lines; returns the seconds taken.
    """
    from fairseq_ser.errors import SerError
    from fairseq_ser.experiments import stages

    report = report or stages.logger.info
    if len(argv) > 2 and argv[1] == "-m":
        name, args = _MODULES.get(argv[2]), argv[3:]
    else:
        name, args = os.path.basename(str(argv[0])), argv[1:]
    if name not in _RUNNERS:
        raise ValueError(f"no in-process runner for {' '.join(argv[:3])}")
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    start = time.time()
    proc = _RUNNERS[name](list(args), cwd=cwd)
    lines = (proc.stdout + proc.stderr).splitlines(keepends=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(argv) + "\n")
        for line in lines:
            log.write(line)
            summary = stages.epoch_summary(line)
            if summary is not None:
                report(summary)
    if proc.returncode != 0:
        raise SerError(f"{argv[0]} failed (exit {proc.returncode}, in-process); log: {log_path}\n"
                       + "".join(lines[-25:]))
    return time.time() - start

"""The stages of each method, and the one runner that executes a stage command.

A stage is one command run in its own folder: ``fairseq-hydra-train`` with a
yaml of ``config/`` (V-FT, TAPT, P-TAPT stage 1, P-TAPT) or ``fairseq-ser
pseudo-labels run``. The runner shows fairseq's epoch summaries as they come,
keeps the whole output in the folder's log, and writes ``done.json`` after the
command succeeded. A folder without ``done.json`` is what an interrupted stage
left: it is cleared and the stage starts again (the pseudo-label step, which
resumes by itself, is rerun in place). The commands are the README's, with
absolute paths; the working directory of a training stage is its folder, so
fairseq's ``hydra_train.log`` lands there too.

Progress (a stage starting, skipped, done; fairseq's epoch summaries) goes to
a ``report`` callback, one line per call: the module's logger by default,
standard output in ``fairseq-ser cv`` and ``demo``.
"""

import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..data.manifest import cluster_ext, cluster_label_path
from ..errors import SerError
from ..fileio import atomic_open, read_json_or_none
from .overrides import Overrides

logger = logging.getLogger(__name__)

# where progress lines go: one call per line (or block of lines)
Report = Callable[[str], None]

METHODS = {"vft": "V-FT", "tapt": "TAPT + V-FT", "ptapt": "P-TAPT + V-FT"}
MARKER = "done.json"

# fairseq's epoch summaries (train and valid) and the fields of them worth showing
_PROGRESS = re.compile(r"\]\[(train|valid)\]\[INFO\] - (epoch \d+ \|.*)")
_SHOWN = ("loss", "ua", "wa", "macro_f1", "num_updates", "accuracy", "wall")


def parse_methods(text: str) -> List[str]:
    """``'vft,tapt'`` -> ``['vft', 'tapt']``; an unknown name is an error."""
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SerError(f"unknown method {', '.join(unknown) or repr(text)}: choose from {', '.join(METHODS)} "
                       "(comma-separated for several)")
    return methods


def console_command(script: str, module: str) -> List[str]:
    """A console script of this Python's environment, or ``python -m module`` where it has none."""
    exe = os.path.join(os.path.dirname(sys.executable), script)
    return [exe] if os.path.isfile(exe) else [sys.executable, "-m", module]


def epoch_summary(line: str) -> Optional[str]:
    """What is shown of a fairseq epoch summary (``   [valid] epoch 001 | loss ... | ua ...``), else None."""
    m = _PROGRESS.search(line)
    if not m:
        return None
    fields = [f.strip() for f in m.group(2).split("|")]
    shown = [fields[0]] + [f for f in fields[1:] if f.split(" ")[0] in _SHOWN or f.startswith("acc_km")]
    return f"   [{m.group(1)}] " + " | ".join(shown)


def run_logged(argv: Sequence[str], log_path: str, cwd: Optional[str] = None, *,
               report: Report = logger.info, env: Optional[Dict[str, str]] = None) -> float:
    """Run ``argv``, writing its output to ``log_path`` and reporting its epoch summaries; return seconds.

    ``env``: variables added to this process's environment for the command.

    A non-zero exit raises :class:`SerError` with the log's last lines.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    start = time.time()
    env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=cwd)
        try:
            for line in proc.stdout:
                log.write(line)
                summary = epoch_summary(line)
                if summary is not None:
                    report(summary)
        finally:
            proc.wait()
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = "".join(f.readlines()[-25:])
        raise SerError(f"{argv[0]} failed (exit {proc.returncode}); log: {log_path}\n{tail}")
    return time.time() - start


@dataclass
class Stage:
    """One command in its own folder, done once ``done.json`` is there."""

    label: str                      # where it is, as shown: "tapt/fold1/tapt"
    title: str                      # what it is: "TAPT"
    directory: str
    argv: List[str]
    settings: Dict                  # recorded in done.json; a rerun with others gets a note
    log_name: str = "train.log"
    outputs: Sequence[str] = ()     # files the next stages read; missing after success is an error
    disposable: Sequence[str] = ()  # globs removed after success unless everything is kept
    resumable: bool = False         # rerun in place after an interruption instead of clearing

    @property
    def marker(self) -> str:
        return os.path.join(self.directory, MARKER)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


def note_settings(label: str, recorded: Optional[Dict], settings: Dict, report: Report = logger.info) -> None:
    """Say so when finished work is reused although it was made with other settings."""
    if recorded is None or recorded == settings:
        return
    changes = []
    for key in sorted(set(recorded) | set(settings)):
        old, new = recorded.get(key), settings.get(key)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list):   # overrides: what went, what came
            changes += [f"-{x}" for x in old if x not in new] + [f"+{x}" for x in new if x not in old]
        else:
            changes.append(f"{key} {old!r} -> {new!r}")
    report(f"[{label}] note: kept, but made with other settings ({', '.join(changes)}); "
           "delete the folder to redo it")


def clear_unfinished(label: str, directory: str, what: str = "unfinished",
                     report: Report = logger.info) -> None:
    if os.path.isdir(directory):
        report(f"[{label}] {what} earlier: cleared, starting again")
        shutil.rmtree(directory)


def execute(stage: Stage, keep_all: bool = False, report: Report = logger.info,
            env: Optional[Dict[str, str]] = None) -> Optional[float]:
    """Run ``stage`` unless it is done; return its seconds, or None when it was skipped.

    ``env``: variables added to the environment of the stage's command.
    """
    marker = read_json_or_none(stage.marker)
    if marker is not None:
        report(f"[{stage.label}] {stage.title}: skipped (done earlier in {marker['seconds']:.0f} s)")
        note_settings(stage.label, marker.get("settings"), stage.settings, report)
        return None
    if stage.resumable and os.path.isdir(stage.directory):
        report(f"[{stage.label}] unfinished earlier: resuming in place")
    elif not stage.resumable:
        clear_unfinished(stage.label, stage.directory, report=report)
    os.makedirs(stage.directory, exist_ok=True)
    log_path = stage.path(stage.log_name)
    report(f"[{stage.label}] {stage.title}: running (log: {log_path})")
    # looked up at call time, so that tests can stand in for the subprocess
    seconds = run_logged(stage.argv, log_path, cwd=stage.directory, report=report, env=env)
    for name in stage.outputs:
        if not os.path.isfile(stage.path(name)):
            raise SerError(f"{stage.path(name)}: {stage.title} finished without writing it; log: {log_path}")
    if not keep_all:
        for pattern in stage.disposable:
            for path in glob.glob(stage.path(pattern)):
                if os.path.basename(path) not in stage.outputs:
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with atomic_open(stage.marker, "w", encoding="utf-8") as f:
        json.dump({"label": stage.label, "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "settings": stage.settings, "argv": stage.argv}, f, indent=2)
    report(f"[{stage.label}] {stage.title}: done in {seconds:.0f} s")
    return seconds


@dataclass
class Recipe:
    """The stage commands of V-FT, TAPT and P-TAPT, for any fold."""

    config_dir: str
    w2v_path: str
    overrides: Overrides = field(default_factory=Overrides)
    stage1_w2v_path: Optional[str] = None   # P-TAPT stage 1 (the paper: wav2vec 1.0 large)
    ks: Sequence[int] = (64, 512, 4096)
    seed: int = 1

    def __post_init__(self):
        import fairseq_ser

        self.hydra_train = console_command("fairseq-hydra-train", "fairseq_cli.hydra_train")
        self.fairseq_ser = console_command("fairseq-ser", "fairseq_ser.cli.main")
        # absolute, so that fairseq imports this very package whatever the working directory
        self.user_dir = os.path.dirname(os.path.abspath(fairseq_ser.__file__))

    def train(self, label: str, title: str, config: str, fold_dir: str, directory: str, start: str,
              seed: int, extra: Sequence[str] = (), outputs: Sequence[str] = (),
              disposable: Sequence[str] = ("checkpoint*.pt",)) -> Stage:
        """A ``fairseq-hydra-train`` stage with ``config``.yaml on one fold."""
        overrides = list(extra) + self.overrides.for_stage(config)
        argv = [*self.hydra_train, "--config-dir", self.config_dir, "--config-name", config,
                f"task.data={fold_dir}", f"model.w2v_path={start}", f"checkpoint.save_dir={directory}",
                f"common.user_dir={self.user_dir}", f"common.seed={seed}", *overrides]
        settings = {"config": config, "start": start, "seed": seed, "overrides": overrides}
        return Stage(label, title, directory, argv, settings, outputs=outputs, disposable=disposable)

    def adaptation(self, method: str, fold_dir: str, directory: str, label: str,
                   audio_dir: Optional[str] = None) -> Tuple[List[Stage], str]:
        """The stages run before fine-tuning, and the checkpoint V-FT starts from.

        ``fold_dir`` holds the labelled data (P-TAPT stage 1 trains on it);
        ``audio_dir`` the audio of the label-free stages (TAPT, the pseudo-labels
        and P-TAPT pretraining): ``train.tsv`` and ``valid.tsv``, by default the
        fold's own (see :mod:`fairseq_ser.data.unlabelled` for one that adds
        unlabelled audio).
        """
        if method == "vft":
            return [], self.w2v_path
        audio_dir = audio_dir or fold_dir
        last = "checkpoint_last.pt"
        if method == "tapt":
            tapt = self.train(f"{label}/tapt", "TAPT", "tapt", audio_dir, os.path.join(directory, "tapt"),
                              self.w2v_path, self.seed, outputs=[last])
            return [tapt], tapt.path(last)
        stage1 = self.train(f"{label}/ptapt_stage1", "P-TAPT stage 1 (frame emotion model)", "ptapt_stage1",
                            fold_dir, os.path.join(directory, "ptapt_stage1"),
                            self.stage1_w2v_path or self.w2v_path, self.seed, outputs=["checkpoint_best.pt"])
        labels_dir = os.path.join(directory, "pseudo_labels")
        ks = [str(k) for k in self.ks]
        # train and valid only: the adaptation never touches the test audio
        argv = [*self.fairseq_ser, "pseudo-labels", "run", audio_dir, labels_dir, "--checkpoint",
                stage1.path("checkpoint_best.pt"), "--ks", *ks, "--splits", "train", "valid", "--no-progress"]
        labels = Stage(f"{label}/pseudo_labels", f"pseudo-labels (K = {', '.join(ks)})", labels_dir, argv,
                       {"command": "pseudo-labels run", "ks": ks, "start": stage1.path("checkpoint_best.pt")},
                       log_name="pseudo_labels.log", outputs=[cluster_label_path("", "train", k) for k in ks],
                       disposable=["features"], resumable=True)
        ptapt = self.train(f"{label}/ptapt", "P-TAPT (pseudo-label pretraining)", "ptapt", audio_dir,
                           os.path.join(directory, "ptapt"), self.w2v_path, self.seed, outputs=[last],
                           extra=[f"task.label_dir={labels_dir}",
                                  "task.cluster_labels=[" + ",".join(cluster_ext(k) for k in ks) + "]"])
        return [stage1, labels, ptapt], ptapt.path(last)

    def finetune(self, fold_dir: str, directory: str, start: str, seed: int, label: str) -> Stage:
        """One V-FT run: training only (its evaluation is the experiment's); keeps checkpoint_best.pt."""
        return self.train(label, f"V-FT (seed {seed})", "vft", fold_dir, directory, start, seed,
                          outputs=["checkpoint_best.pt"], disposable=["checkpoint_last.pt"])

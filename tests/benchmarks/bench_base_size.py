"""Every stage as users run it, at the size users run it: wav2vec2-base and wav2vec 1.0 large shapes on EmoDB.

Each stage runs its real command as its own process,

    fairseq-hydra-train --config-dir config --config-name STAGE task.data=DATA model.w2v_path=CKPT \\
        common.cpu=true common.fp16=false [common.bf16=true] optimization.max_update=2 ...

in fp32 and in bf16 (``common.bf16=true``: fairseq casts the model and the
batches to bf16 and keeps fp32 master weights): ``vft``, ``tapt``,
``ptapt_stage1`` on a wav2vec 1.0 backbone, ``ptapt_stage1`` on a wav2vec 2.0
backbone with ``model.frame_dim=0`` (its frame features are the 768-d
Transformer output) and ``ptapt``. P-TAPT learns the pseudo-labels that
``fairseq-ser pseudo-labels run`` (default K = 64, 512, 4096) makes from the
fp32 wav2vec 1.0 stage-1 checkpoint, the paper's; the fp32 wav2vec 2.0 stage-1
checkpoint is clustered too, for the time and memory of 768-d features.
Besides the stage's own paths, every command gets ``common.log_interval=1``
(a log line per update), ``dataset.num_workers=0`` (the process measured is the
one that trains; loader workers would be forked copies of it),
``dataset.batch_size``, ``optimization.update_freq=[1]`` (an update is one
batch; TAPT's yaml accumulates 4) and ``checkpoint.no_save=true``, except the
fp32 stage-1 runs, whose checkpoint is clustered (saved without optimizer
state). Crop length (``task.max_sample_size``) and every other setting are the
yaml's. EmoDB has no utterance longer than 9 s, so no crop ever acts.

Checkpoints (random weights: no released checkpoint is reachable here; speed
and memory do not depend on the values):

- wav2vec 2.0 base: fairseq's ``Wav2Vec2Config`` defaults (12 layers of 768,
  FFN 3072, 12 heads, CNN of 512 channels) with the fields of fairseq's
  ``examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml``, the
  run of ``wav2vec_small.pt`` (quantizer of 2 x 320 codes, final_dim 256, ...);
  saved as fairseq's trainer saves (``cfg`` layout: the whole FairseqConfig
  with that run's model, task and criterion; quantizer and projection heads
  kept), so TAPT continues it;
- wav2vec 1.0 large: ``Wav2VecModel`` with the architecture flags of the
  wav2vec 1.0 training command in fairseq's ``examples/wav2vec/README.md``
  (CNN of 7 layers of 512 channels, hop 160; 12 aggregator layers of 512 with
  kernels 2 to 13, skip connections, residual scale 0.5, log compression),
  saved in the legacy ``args`` layout that ``wav2vec_large.pt`` ships in.

Data: ``fairseq-ser prepare emodb`` (5 speaker folds), then from fold 1's
training split the utterances closest to ``--seconds`` long (EmoDB's mean,
2.8 s), each class in turn, until there are ``--train-utterances`` and enough
frames for the largest K; validation: the 2 shortest validation utterances
(validation runs once, after the last update, and is not what is measured).
With lengths this close, every update of every stage holds about
batch x 2.8 s of audio, so stages compare on the same work.

Time: every output line is stamped as it arrives. Startup = launch until
fairseq logs "Start iterating over samples" (imports, config, task and data,
checkpoint read, model build, optimizer, fairseq's dry run over the
validation batches). Update n = from the previous update's ``train_inner``
line (or that start line) to update n's, data loading included. s/update is
update 2: update 1 also pays one-off costs (first allocations, lazy
initialisation) and is shown beside it. What follows the last update
(validation, saving, exit) is in neither. Memory: peak RSS of the training
process over its whole run (``wait4``), and its ``VmHWM`` read from /proc when
the start line arrives: the peak of loading and building, before any update.
Their difference is what the updates added (activations, gradients, Adam's
moments). The parameter counts are fairseq's own log line; "fp32 weights +
Adam" is 4 x params + 12 x trained bytes (weights; gradients and two Adam
moments of the trained ones).

A command that fails, logs fewer updates or a non-finite loss is shown as
failed in the status column with its last stderr line, and the benchmark goes
on; stages that need its checkpoint or labels are shown as skipped. With
``--out DIR`` every command's stamped output goes to DIR/logs/.

Batch sizes: the yaml's 64 utterances per update of a 95 M-parameter model
would take many minutes per update on 2 shared cores. fp32 runs 4 utterances
per update. bf16 runs 1: a CPU without bf16 matrix instructions (this one:
AVX2, no AVX512-BF16 or AMX) ran bf16 matrix products about 30 times and
convolutions about 10 times slower than fp32, and a bf16 V-FT update of 4 to 5
utterances of about 5 s took 5 to 6 minutes; there the bf16 rows check that
every stage runs and what it holds in memory, not its speed. Both keep the
whole benchmark near 20 minutes on 2 shared cores. ``--quick``: tiny models of
the same families, 7 utterances of about 1.4 s, batch 2 in both precisions,
K = 16, 32, 64: the code path in a few minutes, not a measurement.
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import EMODB, REPO, machine_description, print_summary, print_table  # noqa: E402

sys.path.insert(0, str(REPO))

MIB = 2**20
SAMPLE_RATE = 16000

# wav2vec 2.0 base: Wav2Vec2Config defaults plus the model / task / criterion
# fields of fairseq's examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml
W2V2_BASE = {
    "model": {"quantize_targets": True, "final_dim": 256, "encoder_layerdrop": 0.05, "dropout_input": 0.1,
              "dropout_features": 0.1, "feature_grad_mult": 0.1},
    "task": {"max_sample_size": 250000, "min_sample_size": 32000, "normalize": False},
    "criterion": {"infonce": True, "loss_weights": [0.1, 10],
                  "log_keys": ["prob_perplexity", "code_perplexity", "temp"]},
}
# --quick: the same family (base's CNN kernels and strides, quantizer), a thousand times smaller
W2V2_TINY = {
    "model": dict(W2V2_BASE["model"], conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
                  encoder_layers=1, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=2,
                  conv_pos=16, conv_pos_groups=4, latent_vars=16, final_dim=16),
    "task": W2V2_BASE["task"],
    "criterion": W2V2_BASE["criterion"],
}

# wav2vec 1.0 large: the architecture flags of the wav2vec 1.0 training command in
# fairseq's examples/wav2vec/README.md (the model released as wav2vec_large.pt)
W2V1_LARGE = {
    "conv_feature_layers": "[(512, 10, 5), (512, 8, 4)" + ", (512, 4, 2)" * 3 + ", (512, 1, 1)" * 2 + "]",
    "conv_aggregator_layers": "[" + ", ".join(f"(512, {k}, 1)" for k in range(2, 14)) + "]",
    "skip_connections_agg": True,
    "residual_scale": 0.5,
    "log_compression": True,
    "num_negatives": 10,
}
# --quick: the large model's hop (160) and receptive field (465) at 32 channels, 3 aggregator layers
W2V1_TINY = dict(W2V1_LARGE, conv_feature_layers=W2V1_LARGE["conv_feature_layers"].replace("512", "32"),
                 conv_aggregator_layers="[(32, 2, 1), (32, 3, 1), (32, 4, 1)]", num_negatives=2, prediction_steps=3)

PRECISIONS = {"fp32": ["common.cpu=true", "common.fp16=false"],
              "bf16": ["common.cpu=true", "common.fp16=false", "common.bf16=true"]}

START_LINE = "Start iterating over samples"
# fairseq's per-update line; fairseq-hydra-train formats it "[time][train_inner][INFO] - epoch 001: ..."
INNER = re.compile(r"(?:\[train_inner\]|\| train_inner \|).*? loss=([^,\s]+).*?bsz=([\d.]+).*?num_updates=(\d+)")
PARAMS = re.compile(r"num\. shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny models, 7 utterances of about 1.4 s, batch 2, K = 16 32 64: the code path only")
    p.add_argument("--batch-size", type=int, help="dataset.batch_size of the fp32 runs (default: 4; --quick: 2)")
    p.add_argument("--bf16-batch-size", type=int,
                   help="dataset.batch_size of the bf16 runs (default: 1, see above; --quick: 2)")
    p.add_argument("--seconds", type=float,
                   help="training utterances as close to this length as EmoDB has (default: 2.8, its mean; "
                   "--quick: 1.4)")
    p.add_argument("--train-utterances", type=int,
                   help="at least this many training utterances (default: 32; --quick: 7), and at least two "
                   "batches and 1.1 x max(K) frames")
    p.add_argument("--updates", type=int, default=2, help="optimization.max_update (default: %(default)s)")
    p.add_argument("--ks", type=int, nargs="+", help="--ks of fairseq-ser pseudo-labels and the P-TAPT heads "
                   "(default: the commands' own 64 512 4096; --quick: 16 32 64)")
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS),
                   help="default: %(default)s")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="OMP_NUM_THREADS of every command (default: the cores available, %(default)s)")
    p.add_argument("--timeout", type=int, default=1800,
                   help="seconds before a command is killed (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "fairseq-ser-bench",
                   help="where the checkpoints are kept between runs and each run works in a folder of its "
                   "own, deleted after it (default: %(default)s)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write the results to DIR/base_size.json and each command's output to DIR/logs/")
    return p.parse_args(argv)


def venv_command(name):
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        raise SystemExit(f"{exe} not found: install the package first (make install)")
    return exe


def cache_name(stem, shape):
    """A checkpoint file name that changes with the architecture, so an edited shape is never served stale."""
    digest = hashlib.sha1(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]
    return f"{stem}_{digest}.pt"


# ---------------------------------------------------------------------------------------------- checkpoints


def save_wav2vec2(path: Path, shape, seed=0):
    """A wav2vec 2.0 pretraining checkpoint with random weights, in the layout fairseq's trainer writes.

    The trainer saves ``OmegaConf.to_container(cfg, resolve=True,
    enum_to_str=True)`` of the whole FairseqConfig; here it holds fairseq's
    pretraining run of ``shape`` (model, task, criterion, optimizer), and the
    model keeps its quantizer and projection heads. Written once, then reused.
    """
    if path.is_file():
        return path
    import torch
    from fairseq.criterions.wav2vec_criterion import Wav2VecCriterionConfig
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
    from omegaconf import OmegaConf, open_dict

    def section(dataclass, name, fields):
        node = OmegaConf.merge(OmegaConf.structured(dataclass()), fields)
        with open_dict(node):
            node._name = name
        return node

    cfg = OmegaConf.structured(FairseqConfig())
    with open_dict(cfg):
        cfg.model = section(Wav2Vec2Config, "wav2vec2", shape["model"])
        cfg.task = section(AudioPretrainingConfig, "audio_pretraining", dict(shape["task"], data="."))
        cfg.criterion = section(Wav2VecCriterionConfig, "wav2vec", shape["criterion"])
        cfg.optimizer = {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06, "weight_decay": 0.01,
                         "lr": [0.0005]}
        cfg.lr_scheduler = {"_name": "polynomial_decay", "warmup_updates": 32000, "lr": [0.0005]}
    torch.manual_seed(seed)
    model = Wav2Vec2Model(cfg.model)
    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"metrics": {}, "previous_training_time": 0.0,
                        "train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
                        "val_loss": None},
    }
    _save(state, path)
    return path


def save_wav2vec1(path: Path, fields, seed=0):
    """A fairseq wav2vec 1.0 ``Wav2VecModel`` (random weights) in the legacy ``args`` layout of ``wav2vec_large.pt``."""
    if path.is_file():
        return path
    import argparse as argparse_
    import dataclasses
    import warnings

    import torch
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel
    from omegaconf import OmegaConf

    cfg = merge_with_parent(Wav2VecConfig(), OmegaConf.create(dict(fields, infonce=False)))
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # fairseq's weight_norm deprecation
        warnings.simplefilter("ignore", FutureWarning)
        model = Wav2VecModel(cfg)
    # choice fields as plain strings, as a legacy namespace holds them
    stored = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    model_fields = {f.name: stored[f.name] for f in dataclasses.fields(Wav2VecConfig) if f.name in stored}
    # the rest of the README's command line, as a legacy checkpoint's flat namespace holds it
    args = argparse_.Namespace(**model_fields, arch="wav2vec", task="audio_pretraining", criterion="wav2vec",
                               optimizer="adam", lr=[1e-06], lr_scheduler="cosine", max_update=400000,
                               warmup_updates=500, max_sample_size=150000, max_tokens=1500000,
                               sample_rate=16000, normalize=False, seed=1, fp16=True)
    _save({"args": args, "model": model.state_dict(), "optimizer_history": [], "extra_state": {"epoch": 1},
           "last_optimizer_state": None}, path)
    return path


def _save(state, path: Path):
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parameter_count(path: Path):
    from fairseq_ser.models.safe_load import load_checkpoint_file

    # the project's own safe loader: the wav2vec 1.0 file is in the legacy args layout
    state = load_checkpoint_file(str(path))
    return sum(v.numel() for v in state["model"].values() if v.is_floating_point())


# --------------------------------------------------------------------------------------------------- data


def frames_of(num_samples):
    """wav2vec 2.0's frames of an utterance (fairseq_ser.frames)."""
    from fairseq_ser.frames import num_frames

    return num_frames(num_samples)


def make_data(work: Path, env, seconds: float, min_count: int, min_frames: int):
    """``work/data`` from EmoDB fold 1: training utterances near ``seconds`` long, the 2 shortest validation ones.

    Each class in turn gives its utterance closest to ``seconds`` not taken
    yet, until there are ``min_count`` of them holding ``min_frames`` frames:
    every class is in the training split (no class weight is zero) and
    batches of any stage hold about the same audio.
    """
    from fairseq_ser.data.manifest import dict_path, load_split, read_label_dict, write_label_dict, write_split

    folds = work / "emodb"
    run_checked([venv_command("fairseq-ser"), "prepare", "emodb", EMODB, folds, "--num-folds", 5, "--no-progress"], env)
    fold = folds / "fold1"
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train = load_split(str(fold), "train")
    target = seconds * SAMPLE_RATE
    by_class = {}
    for i in sorted(range(len(train.labels)), key=lambda i: abs(train.manifest.entries[i][1] - target)):
        by_class.setdefault(train.labels[i], []).append(i)
    picked, frames, rank = [], 0, 0
    while len(picked) < min_count or frames < min_frames:
        took = False
        for members in by_class.values():
            if rank < len(members) and (len(picked) < min_count or frames < min_frames):
                picked.append(members[rank])
                frames += frames_of(train.manifest.entries[members[rank]][1])
                took = True
        if not took:
            raise SystemExit(f"{fold}/train.tsv: {len(picked)} utterances, {frames} frames; not enough")
        rank += 1
    rows = [(*train.manifest.entries[i], train.labels[i]) for i in picked]
    write_split(str(data), "train", train.manifest.root, rows)
    valid = load_split(str(fold), "valid")
    shortest = sorted(range(len(valid.labels)), key=lambda i: valid.manifest.entries[i][1])[:2]
    write_split(str(data), "valid", valid.manifest.root,
                [(*valid.manifest.entries[i], valid.labels[i]) for i in shortest])
    write_label_dict(dict_path(str(data)), read_label_dict(dict_path(str(fold))))
    return data, [n / SAMPLE_RATE for _, n, _ in rows], frames


def run_checked(argv, env):
    proc = subprocess.run([str(a) for a in argv], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


# ---------------------------------------------------------------------------------------- measured commands


class Measured:
    """One command run to completion: every output line with its arrival time, exit code, peak RSS.

    ``hwm_at[mark]`` is the process's VmHWM (its peak RSS so far) read from
    /proc when the first line containing ``mark`` arrived.
    """

    def __init__(self, argv, env, timeout, marks=()):
        self.argv = [str(a) for a in argv]
        self.lines = []  # (seconds since launch, "out" or "err", text)
        self.hwm_at = {}
        self.timed_out = False
        start = time.perf_counter()
        proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
        lock = threading.Lock()

        def read(stream, name):
            for line in stream:
                now = time.perf_counter() - start
                for mark in marks:
                    if mark in line and mark not in self.hwm_at:
                        self.hwm_at[mark] = vm_hwm(proc.pid)
                with lock:
                    self.lines.append((now, name, line.rstrip("\n")))

        readers = [threading.Thread(target=read, args=(proc.stdout, "out"), daemon=True),
                   threading.Thread(target=read, args=(proc.stderr, "err"), daemon=True)]
        for t in readers:
            t.start()
        killer = threading.Timer(timeout, self._kill, args=(proc,))
        killer.start()
        # wait4: the resource usage of exactly this child, so successive commands do not mix
        _, status, usage = os.wait4(proc.pid, 0)
        killer.cancel()
        for t in readers:
            t.join()
        proc.returncode = self.returncode = os.waitstatus_to_exitcode(status)
        self.seconds = time.perf_counter() - start
        self.peak = usage.ru_maxrss * 1024
        self.lines.sort(key=lambda x: x[0])

    def _kill(self, proc):
        self.timed_out = True
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass

    def first(self, pattern):
        """(time, match) of the first line matching ``pattern``, or (None, None)."""
        for t, _, text in self.lines:
            m = re.search(pattern, text)
            if m:
                return t, m
        return None, None

    def last_error(self):
        """The last exception line of stderr, else its last unindented line, else the last output line."""
        for _, name, text in reversed(self.lines):
            if name == "err" and re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b", text):
                return text.strip()
        for stream in ("err", "out"):
            for _, name, text in reversed(self.lines):
                if name == stream and text.strip() and not text.startswith(" "):
                    return text.strip()
        return ""

    def status(self, problem=None):
        if self.timed_out:
            return f"timeout after {self.seconds:.0f} s"
        if self.returncode != 0:
            return f"failed (exit {self.returncode}): {self.last_error()}"
        return f"failed: {problem}" if problem else "ok"

    def save(self, path: Path):
        """The output, each line stamped with its arrival (seconds since launch) and stream."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(" ".join(self.argv) + "\n")
            for t, name, text in self.lines:
                f.write(f"{t:9.2f} {name} {text}\n")
            f.write(f"exit {self.returncode}, {self.seconds:.1f} s, peak RSS {self.peak / MIB:,.0f} MiB\n")


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def train_stage(run, args, env):
    """Run one stage's fairseq-hydra-train; a result dict with its times, memory and status."""
    save = ["checkpoint.no_save_optimizer_state=true"] if run["save"] else ["checkpoint.no_save=true"]
    argv = [venv_command("fairseq-hydra-train"), "--config-dir", "config", "--config-name", run["config"],
            *run["overrides"], *PRECISIONS[run["precision"]], "common.log_interval=1", "dataset.num_workers=0",
            f"dataset.batch_size={run['batch_size']}", "optimization.update_freq=[1]",
            f"optimization.max_update={args.updates}", f"checkpoint.save_dir={run['save_dir']}", *save]
    label = f"{run['stage']} {run['precision']}"
    shown = [a for a in argv[5:] if not a.startswith(("task.data=", "checkpoint.save_dir=", "task.label_dir="))]
    print(f"{label}: fairseq-hydra-train --config-dir config --config-name {run['config']} {' '.join(shown)}",
          flush=True)
    m = Measured(argv, env, args.timeout, marks=(START_LINE,))
    if args.out:
        m.save(args.out / "logs" / f"{slug(label)}.log")
    result = {k: run[k] for k in ("stage", "key", "config", "backbone", "precision", "batch_size")}
    result.update(wall_s=m.seconds, peak_rss=m.peak, argv=m.argv[1:], update_s=[], bsz=[], loss=[])
    _, params = m.first(PARAMS.pattern)
    if params:
        result["params"] = int(params.group(1).replace(",", ""))
        result["trained"] = int(params.group(2).replace(",", ""))
    previous, _ = m.first(re.escape(START_LINE))
    if previous is not None:
        result["startup_s"] = previous
        result["rss_before_update"] = m.hwm_at.get(START_LINE)
    updates = {}
    for t, _, text in m.lines:
        inner = INNER.search(text)
        if inner:
            updates.setdefault(int(inner.group(3)), (t, inner.group(1), float(inner.group(2))))
    for n in range(1, args.updates + 1):
        if n not in updates or previous is None:
            break
        t, loss, bsz = updates[n]
        result["update_s"].append(t - previous)
        result["loss"].append(loss)
        result["bsz"].append(bsz)
        previous = t
    problem = None
    if len(result["update_s"]) < args.updates:
        problem = f"{len(result['update_s'])} of {args.updates} updates logged"
    elif not all(math.isfinite(float(x)) for x in result["loss"]):
        problem = f"loss {', '.join(result['loss'])}"
    result["status"] = m.status(problem)
    print(f"  {result['status']}; {m.seconds:.0f} s in all, s/update {fmt(per_update(result))}, "
          f"peak RSS {m.peak / MIB:,.0f} MiB", flush=True)
    return result


def per_update(result):
    """Seconds of the last logged update (update 2 of 2), None when fewer than 2 were logged."""
    return result["update_s"][-1] if len(result.get("update_s") or []) > 1 else None


def pseudo_labels(features, data, labels, ckpt, ks, env, args):
    """``fairseq-ser pseudo-labels run`` on a stage-1 checkpoint; a result dict with its phases and peak RSS."""
    argv = [venv_command("fairseq-ser"), "pseudo-labels", "run", data, labels, "--checkpoint", ckpt,
            "--ks", *ks, "--no-progress"]
    print(f"pseudo-labels, {features}: fairseq-ser pseudo-labels run DATA LABELS --checkpoint STAGE1 "
          f"--ks {' '.join(map(str, ks))} --no-progress", flush=True)
    m = Measured(argv, env, args.timeout)
    if args.out:
        m.save(args.out / "logs" / f"pseudo_labels_{slug(features)}.log")
    result = {"features": features, "ks": list(ks), "wall_s": m.seconds, "peak_rss": m.peak, "argv": m.argv[1:]}
    _, dumped = m.first(r"dumping train shard .*?(\d+) frames of dim (\d+)")
    if dumped:
        result["train_frames"], result["dim"] = int(dumped.group(1)), int(dumped.group(2))
    _, sample = m.first(rf"km{max(ks)}: sampling (\d+) of")
    if sample and dumped:
        result["sample_bytes"] = int(sample.group(1)) * result["dim"] * 4
    # phases by the lines that open and close them: dump until the first k-means line,
    # k-means until its last iteration line, assignment until the end
    t_km, _ = m.first(r"km\d+: sampling")
    km_done = [t for t, _, text in m.lines if re.search(r"km\d+: (iteration \d+/|FAISS stopped)", text)]
    if t_km is not None:
        result["dump_s"] = t_km
        if km_done:
            result["kmeans_s"] = km_done[-1] - t_km
            result["assign_s"] = m.seconds - km_done[-1]
    missing = [k for k in ks if not (labels / f"train.km{k}").is_file()]
    result["status"] = m.status(f"no train.km{missing[0]}" if missing else None)
    print(f"  {result['status']}; {m.seconds:.0f} s, peak RSS {m.peak / MIB:,.0f} MiB", flush=True)
    return result


# ------------------------------------------------------------------------------------------------ report


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def mib(x):
    return "-" if x is None else f"{x / MIB:,.0f}"


def cell(text, width=180):
    text = text.replace("|", "/")
    return text if len(text) <= width else text[:width - 3] + "..."


def training_rows(results, mean_seconds):
    rows = []
    for r in results:
        updates, bsz = r.get("update_s") or [], r.get("bsz") or []
        static = 4 * r["params"] + 12 * r["trained"] if r.get("params") is not None else None
        before = r.get("rss_before_update")
        grown = r["peak_rss"] - before if before and r.get("peak_rss") else None
        params = f"{r['params'] / 1e6:.1f} ({r['trained'] / 1e6:.1f})" if r.get("params") is not None else "-"
        rows.append([r["stage"], r["backbone"], r["precision"],
                     f"{r['batch_size']} ({'/'.join(f'{b:g}' for b in bsz) or '-'})",
                     fmt(bsz[-1] * mean_seconds) if bsz else "-",
                     fmt(r.get("startup_s")), fmt(updates[0] if updates else None),
                     f"**{fmt(per_update(r))}**", f"**{mib(r.get('peak_rss'))}**", mib(before), mib(grown),
                     params, mib(static), fmt(r.get("wall_s"), 0), cell(r["status"])])
    return rows


def label_rows(results):
    return [[r["features"], r.get("dim", "-"), f"{r['train_frames']:,}" if "train_frames" in r else "-",
             " ".join(map(str, r["ks"])), mib(r.get("sample_bytes")), fmt(r.get("dump_s")), fmt(r.get("kmeans_s")),
             fmt(r.get("assign_s")), fmt(r.get("wall_s"), 0), f"**{mib(r.get('peak_rss'))}**", cell(r["status"])]
            for r in results]


def summary(results, labels):
    ok = [r for r in results if r["status"] == "ok"]
    out = {"ok": f"{len(ok)}/{len(results)}",
           "failed": ",".join(f"{r['key']}_{r['precision']}" for r in results if r["status"] != "ok") or "none"}
    for r in ok:
        out[f"{r['key']}_{r['precision']}_s"] = per_update(r)
        out[f"{r['key']}_{r['precision']}_mib"] = r["peak_rss"] / MIB
    for r in labels:
        if r["status"] == "ok":
            out[f"labels_{r.get('dim', 0)}d_s"] = r["wall_s"]
            out[f"labels_{r.get('dim', 0)}d_mib"] = r["peak_rss"] / MIB
    return out


# -------------------------------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    if not (EMODB / "wav").is_dir():
        print(f"EmoDB not found at {EMODB}; skipping")
        print_summary("base_size", {"skipped": "no_emodb"})
        return 0
    batch = {"fp32": args.batch_size or (2 if args.quick else 4),
             "bf16": args.bf16_batch_size or (2 if args.quick else 1)}
    ks = args.ks or ([16, 32, 64] if args.quick else [64, 512, 4096])
    seconds = args.seconds or (1.4 if args.quick else 2.8)
    min_count = max(args.train_utterances or (7 if args.quick else 32), 2 * max(batch.values()))
    # HYDRA_FULL_ERROR: a failing command's last stderr line is its exception, not Hydra's hint
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1",
               PYTHONWARNINGS="ignore::FutureWarning")
    start = time.perf_counter()
    load_before = os.getloadavg()
    print(f"machine: {machine_description()}; commands run with OMP_NUM_THREADS={args.threads}", flush=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)} (1, 5, 15 min)", flush=True)

    size = "tiny" if args.quick else "full"
    w2v2_shape, w2v1_shape = (W2V2_TINY, W2V1_TINY) if args.quick else (W2V2_BASE, W2V1_LARGE)
    ckpt_dir = args.cache_dir / "base_size"
    w2v2 = save_wav2vec2(ckpt_dir / cache_name(f"wav2vec2_{size}", w2v2_shape), w2v2_shape)
    w2v1 = save_wav2vec1(ckpt_dir / cache_name(f"wav2vec1_{size}", w2v1_shape), w2v1_shape)
    w2v2_name = "wav2vec 2.0 tiny" if args.quick else "wav2vec 2.0 base"
    w2v1_name = "wav2vec 1.0 tiny" if args.quick else "wav2vec 1.0 large"
    print(f"checkpoints: {w2v2_name}, {parameter_count(w2v2) / 1e6:.1f} M parameters with its quantizer "
          f"({w2v2.name}); {w2v1_name}, {parameter_count(w2v1) / 1e6:.1f} M ({w2v1.name})", flush=True)

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-size-", dir=args.cache_dir))
    results, label_results = [], []
    try:
        data, lengths, frames = make_data(work, env, seconds, min_count, int(1.1 * max(ks)))
        mean_seconds = sum(lengths) / len(lengths)
        print(f"data: EmoDB fold 1, {len(lengths)} training utterances near {seconds} s "
              f"({min(lengths):.2f}-{max(lengths):.2f} s, mean {mean_seconds:.2f} s, {frames:,} frames), "
              f"2 validation utterances; batch_size {batch['fp32']} (fp32), {batch['bf16']} (bf16); "
              f"{args.updates} updates; crops: each yaml's task.max_sample_size", flush=True)
        checkpoints = {}

        def stage(name, key, config, backbone, overrides, save=False):
            for precision in args.precisions:
                run = {"stage": name, "key": key, "config": config, "backbone": backbone, "precision": precision,
                       "batch_size": batch[precision], "overrides": [f"task.data={data}", *overrides],
                       "save_dir": work / "ckpt" / f"{key}_{precision}", "save": save and precision == "fp32"}
                result = train_stage(run, args, env)
                results.append(result)
                found = [run["save_dir"] / f for f in ("checkpoint_best.pt", "checkpoint_last.pt")]
                found = [f for f in found if f.is_file()]
                if run["save"] and result["status"] == "ok" and found:
                    checkpoints[key] = found[0]

        stage("vft", "vft", "vft", w2v2_name, [f"model.w2v_path={w2v2}"])
        stage("tapt", "tapt", "tapt", w2v2_name, [f"model.w2v_path={w2v2}"])
        stage("ptapt_stage1", "stage1_w2v1", "ptapt_stage1", w2v1_name, [f"model.w2v_path={w2v1}"], save=True)
        stage("ptapt_stage1, frame_dim=0", "stage1_w2v2", "ptapt_stage1", w2v2_name,
              [f"model.w2v_path={w2v2}", "model.frame_dim=0"], save=True)
        label_dirs = {}
        for key, features in (("stage1_w2v1", f"{w2v1_name} stage 1"),
                              ("stage1_w2v2", f"{w2v2_name} stage 1, frame_dim=0")):
            if key not in checkpoints:
                label_results.append({"features": features, "ks": ks, "status": f"skipped: no fp32 {key} checkpoint"})
                continue
            labels = work / "labels" / key
            result = pseudo_labels(features, data, labels, checkpoints[key], ks, env, args)
            label_results.append(result)
            if result["status"] == "ok":
                label_dirs[key] = labels
            shutil.rmtree(labels / "features", ignore_errors=True)
            shutil.rmtree(checkpoints[key].parent, ignore_errors=True)
        # P-TAPT learns the paper's pseudo-labels (wav2vec 1.0 stage 1), else the others
        source = next((k for k in ("stage1_w2v1", "stage1_w2v2") if k in label_dirs), None)
        ptapt = [f"model.w2v_path={w2v2}"]
        if ks != [64, 512, 4096]:
            ptapt.append("task.cluster_labels=[" + ",".join(f"km{k}" for k in ks) + "]")
        if source is None:
            for precision in args.precisions:
                results.append({"stage": "ptapt", "key": "ptapt", "backbone": w2v2_name, "precision": precision,
                                "batch_size": batch[precision], "status": "skipped: no pseudo-labels"})
        else:
            print(f"ptapt learns the pseudo-labels of {source}", flush=True)
            stage("ptapt", "ptapt", "ptapt", w2v2_name, [*ptapt, f"task.label_dir={label_dirs[source]}"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load_after = os.getloadavg()
    wall = time.perf_counter() - start
    print_table(f"Every stage's fairseq-hydra-train, {args.updates} updates on EmoDB, CPU "
                f"({w2v2_name} / {w2v1_name}, random weights)",
                ["stage", "backbone", "precision", "batch (utterances per update)", "audio s per update (approx.)",
                 "startup s", "update 1 s", "s / update (update 2)", "peak RSS MiB", "peak RSS before update 1 MiB",
                 "added by the updates MiB", "params M (trained)", "fp32 weights + Adam MiB (computed)",
                 "process wall s", "status"],
                training_rows(results, mean_seconds))
    print_table("`fairseq-ser pseudo-labels run` on the fp32 stage-1 checkpoints",
                ["frame features", "dim", "train frames", "K", f"k-means sample of K={max(ks)} MiB",
                 "startup + dump s", "k-means s", "assign s", "wall s", "peak RSS MiB", "status"],
                label_rows(label_results))
    print(f"\nload average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.2f}' for x in load_after)} (1, 5, 15 min); wall time {wall / 60:.1f} min")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "base_size.json", "w", encoding="utf-8") as f:
            json.dump({"machine": machine_description(), "quick": args.quick, "batch_size": batch,
                       "updates": args.updates, "train_seconds": lengths, "ks": ks, "threads": args.threads,
                       "load_before": load_before, "load_after": load_after, "wall_s": wall,
                       "training": results, "pseudo_labels": label_results}, f, indent=1, default=str)
        print(f"wrote {args.out / 'base_size.json'}")
    print_summary("base_size", summary(results, label_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

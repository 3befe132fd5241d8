"""Every stage as users run it, for bench_gpu.py: the real commands, on a corpus and checkpoints made here.

Each training stage is the real ``fairseq-hydra-train --config-dir config
--config-name <stage>`` command, under ``common.fp16=true`` and under
``common.bf16=true`` (on the CPU bf16 only: fairseq asserts CUDA for fp16):
fairseq's trainer then casts the model and the criterion (buffers included)
itself, which the hand-written autocast loops of bench_gpu.py never exercise.
The chain is the README's: V-FT, then ``fairseq-ser evaluate`` and
``fairseq-ser predict`` on the checkpoint V-FT wrote; P-TAPT stage 1 from a
wav2vec 1.0 and from a wav2vec 2.0 backbone; ``fairseq-ser pseudo-labels run``
on a stage-1 model (FAISS on the GPU when it sees one); P-TAPT on those
labels; TAPT.

Everything they read is made first, on the machine itself: a generated corpus
(``generate_corpus`` + ``prepare_folder`` as in tests/conftest.py), whose
training manifest is tiled so that one epoch holds more batches than the
updates run (every timed update is then a mid-epoch one); a tiny wav2vec 2.0
pretrained by fairseq itself (config/pretrain_tiny.yaml); on a GPU also a
wav2vec2-base-shaped wav2vec 2.0 with random weights, saved in the cfg layout
of the checkpoint that run wrote, and a wav2vec 1.0 of wav2vec_large's shape
(random weights, saved in wav2vec_large.pt's legacy layout).
"""

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Sequence

from gpu_runner import Runner, console

SPEAKER_REGEX = r"^(spk\d+)_"

# wav2vec_small's pretraining values where they differ from fairseq's Wav2Vec2Config defaults
BASE_PRETRAINING = {"quantize_targets": True, "final_dim": 256, "encoder_layerdrop": 0.05,
                    "dropout_input": 0.1, "dropout_features": 0.1, "feature_grad_mult": 0.1}

# wav2vec 1.0 large, as fairseq's examples/wav2vec README trains it (hop 160 samples, 100 Hz)
WAV2VEC1_LARGE = {
    "conv_feature_layers": "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), "
                           "(512, 1, 1)]",
    "conv_aggregator_layers": "[" + ", ".join(f"(512, {k}, 1)" for k in range(2, 14)) + "]",
    "skip_connections_agg": True, "residual_scale": 0.5, "log_compression": True,
    "num_negatives": 10, "prediction_steps": 12,
}

PRECISION_OVERRIDES = {"fp16": ["common.fp16=true", "common.bf16=false"],
                       "bf16": ["common.fp16=false", "common.bf16=true"],
                       "fp32": ["common.fp16=false", "common.bf16=false"]}


@dataclass(frozen=True)
class Plan:
    """Sizes and overrides of one run of the stages."""

    device: str                      # cuda or cpu
    precisions: Sequence[str]        # of every training command
    updates: int                     # optimization.max_update of every training command
    warmup: int                      # first updates left out of s / update
    speakers: int
    utterances_per_class: int
    min_seconds: float
    max_seconds: float
    train_entries: int               # train.tsv is tiled to at least this many lines: one epoch > updates
    base_backbone: bool              # wav2vec2-base-shaped checkpoint (else the tiny pretrained one)
    wav2vec1_fields: Dict = field(default_factory=dict)
    ks: Sequence[int] = (64, 512, 4096)
    common: Sequence[str] = ()       # appended to every training command
    per_stage: Dict[str, Sequence[str]] = field(default_factory=dict)


def gpu_plan(updates=12, warmup=2):
    """Sizes for an H200 within minutes: one epoch of V-FT/TAPT/P-TAPT batches of 64 covers ``updates``."""
    return Plan(device="cuda", precisions=("fp16", "bf16"), updates=updates, warmup=warmup,
                speakers=4, utterances_per_class=6, min_seconds=2.0, max_seconds=6.0,
                train_entries=64 * (updates + 2), base_backbone=True, wav2vec1_fields=WAV2VEC1_LARGE)


def cpu_plan(updates=3, warmup=1):
    """Tiny sizes to check the code path on a CPU; fp16 is left out: fairseq asserts CUDA for it."""
    from checkpoints import TINY_WAV2VEC1

    return Plan(device="cpu", precisions=("bf16",), updates=updates, warmup=warmup,
                speakers=4, utterances_per_class=2, min_seconds=1.2, max_seconds=2.0,
                train_entries=16 * (updates + 1), base_backbone=False, wav2vec1_fields=TINY_WAV2VEC1,
                ks=(4, 8), common=("common.cpu=true", "dataset.num_workers=0"),
                per_stage={"vft": ["dataset.batch_size=8"], "ptapt_stage1": ["dataset.batch_size=8"],
                           "tapt": ["dataset.batch_size=4"], "ptapt": ["dataset.max_tokens=160000"]})


def make_corpus(work: Path, plan: Plan):
    """Generated corpus, its 2 speaker-independent folds, fold1's train split tiled; (corpus, fold1, note)."""
    from fairseq_ser.data.corpora.custom import prepare_folder
    from fairseq_ser.data.manifest import read_labels, read_manifest, write_labels, write_manifest
    from fairseq_ser.data.synthetic import generate_corpus

    corpus, manifests = work / "corpus", work / "manifests"
    rows = generate_corpus(str(corpus), num_speakers=plan.speakers, utterances_per_class=plan.utterances_per_class,
                           seed=0, min_seconds=plan.min_seconds, max_seconds=plan.max_seconds, progress=False)
    prepare_folder(str(corpus), str(manifests), speaker_regex=SPEAKER_REGEX, folds=2, progress=False)
    fold = manifests / "fold1"
    # the same utterances listed again: an epoch longer than the run, without synthesising more audio
    manifest = read_manifest(str(fold / "train.tsv"))
    labels = read_labels(str(fold / "train.emo"), expected=len(manifest.entries))
    times = -(-plan.train_entries // len(manifest.entries))
    write_manifest(str(fold / "train.tsv"), manifest.root, list(manifest.entries) * times)
    write_labels(str(fold / "train.emo"), labels * times)
    seconds = sum(float(r["seconds"]) for r in rows)
    return (corpus, fold), (f"{len(rows)} utterances, {seconds:.0f} s of audio; fold1 train "
                            f"{len(manifest.entries)} utterances listed {times} times")


def base_checkpoint(template: Path, out: Path):
    """A wav2vec2-base-shaped wav2vec 2.0 with random weights, in the cfg layout of ``template``.

    ``template`` is a checkpoint fairseq's trainer wrote (pretrain_tiny): its
    config is kept and its model section replaced by fairseq's
    ``Wav2Vec2Config`` defaults (12 layers of 768) with wav2vec_small's
    pretraining values, so the file reads like a released wav2vec_small.pt.
    """
    import torch
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from omegaconf import OmegaConf

    # fairseq 0.12's trainer writes plain containers and tensors: no full unpickling needed
    state = torch.load(template, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    config = OmegaConf.merge(OmegaConf.structured(Wav2Vec2Config), BASE_PRETRAINING)
    model = Wav2Vec2Model(OmegaConf.to_object(config))
    model_cfg = OmegaConf.to_container(config, resolve=True, enum_to_str=True)
    model_cfg["_name"] = "wav2vec2"
    cfg = dict(state["cfg"], model=model_cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"args": None, "cfg": cfg, "model": model.state_dict(),
                "optimizer_history": state.get("optimizer_history", []), "extra_state": {},
                "last_optimizer_state": None}, tmp)
    os.replace(tmp, out)
    params = sum(p.numel() for p in model.parameters())
    return out, f"{params / 1e6:.1f} M parameters, {out.stat().st_size / 2**20:.0f} MiB"


def wav2vec1_checkpoint(out: Path, fields: Dict):
    """A fairseq wav2vec 1.0 (``Wav2VecModel``, random weights) in wav2vec_large.pt's legacy ``args`` layout."""
    import torch
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    fields = dict(fields, infonce=False)
    model = Wav2VecModel(merge_with_parent(Wav2VecConfig(), OmegaConf.create(fields)))
    args = argparse.Namespace(**fields, arch="wav2vec", task="speech_pretraining", criterion="binary_cross_entropy",
                              optimizer="adam", lr=[1e-5], sample_rate=16000, max_sample_size=150000, seed=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"args": args, "model": model.state_dict(), "optimizer_history": [],
                "extra_state": {"epoch": 1}, "last_optimizer_state": None}, tmp)
    os.replace(tmp, out)
    params = sum(p.numel() for p in model.parameters())
    return out, f"{params:,} parameters"


def random_labels(fold: Path, out: Path, ks: Sequence[int]):
    """Stand-in pseudo-labels of the right shape, for P-TAPT when the pseudo-label step failed."""
    import numpy as np

    from fairseq_ser.frames import num_frames as cnn_frames
    from fairseq_ser.data.manifest import read_manifest

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in ks:
        for split in ("train", "valid", "test"):
            entries = read_manifest(str(fold / f"{split}.tsv")).entries
            lines = [" ".join(map(str, rng.integers(0, k, cnn_frames(n)))) for _, n in entries]
            (out / f"{split}.km{k}").write_text("\n".join(lines) + "\n")
        (out / f"dict.km{k}.txt").write_text("".join(f"{i} 1\n" for i in range(k)))
    return out, "random frame labels"


class Stages:
    """The chain of real commands, each one row of ``runner``'s table."""

    def __init__(self, runner: Runner, plan: Plan, work: Path):
        self.runner, self.plan, self.work = runner, plan, work
        self.cuda = plan.device == "cuda"
        self.hydra, self.ser = console("fairseq-hydra-train"), console("fairseq-ser")

    def train(self, stage, config, precision, overrides, name, updates=None):
        """One ``fairseq-hydra-train`` run; its save_dir, or None when it failed."""
        save = self.work / "runs" / name
        argv = [self.hydra, "--config-dir", "config", "--config-name", config, *overrides,
                f"checkpoint.save_dir={save}", "common.log_format=json", "common.log_interval=1",
                f"optimization.max_update={updates or self.plan.updates}", *PRECISION_OVERRIDES[precision],
                *self.plan.common, *self.plan.per_stage.get(config, ())]
        return save if self.runner.command(stage, precision, argv, training=True).ok else None

    def run(self):
        plan, work, runner = self.plan, self.work, self.runner
        made = runner.call("setup: generated corpus + manifests", lambda row: make_corpus(work, plan))
        if made is None:
            return
        corpus, fold = made
        data = f"task.data={fold}"
        tiny = self.train("pretrain_tiny (setup: wav2vec 2.0 by fairseq)", "pretrain_tiny", "fp32",
                          [data] + (["common.cpu=false"] if self.cuda else []), "pretrain_tiny", updates=4)
        if tiny is None:
            return
        w2v2 = tiny / "checkpoint_last.pt"
        if plan.base_backbone:
            w2v2 = runner.call("setup: wav2vec2-base-shaped checkpoint (random)",
                               lambda row: base_checkpoint(tiny / "checkpoint_last.pt", work / "ckpt" / "w2v2_base.pt"))
            if w2v2 is None:
                return
        w2v1 = runner.call("setup: wav2vec 1.0 checkpoint (random)",
                           lambda row: wav2vec1_checkpoint(work / "ckpt" / "w2v1.pt", plan.wav2vec1_fields))
        vft = self.vft_then_evaluate(corpus, fold, data, w2v2)
        stage1 = {}
        for backbone, path in (("wav2vec 1.0", w2v1), ("wav2vec 2.0", w2v2)):
            for precision in plan.precisions:
                stage = f"ptapt_stage1 ({backbone})"
                if path is None:
                    runner.skip(stage, precision, "no wav2vec 1.0 checkpoint")
                    continue
                save = self.train(stage, "ptapt_stage1", precision, [data, f"model.w2v_path={path}"],
                                  f"ptapt_stage1_{backbone[-3:]}_{precision}")
                if save is not None and (save / "checkpoint_best.pt").is_file():
                    stage1.setdefault(save / "checkpoint_best.pt", f"{backbone}, {precision}")
        labels = self.pseudo_labels(fold, stage1, w2v2)
        for precision in plan.precisions:
            cluster_labels = ",".join(f"km{k}" for k in plan.ks)
            self.train("ptapt", "ptapt", precision, [data, f"task.label_dir={labels}",
                                                     f"task.cluster_labels=[{cluster_labels}]",
                                                     f"model.w2v_path={w2v2}"], f"ptapt_{precision}")
        for precision in plan.precisions:
            self.train("tapt", "tapt", precision, [data, f"model.w2v_path={w2v2}"], f"tapt_{precision}")
        return vft

    def vft_then_evaluate(self, corpus, fold, data, w2v2):
        runner, trained = self.runner, {}
        for precision in self.plan.precisions:
            save = self.train("vft", "vft", precision, [data, f"model.w2v_path={w2v2}", "optimization.max_epoch=0"],
                              f"vft_{precision}")
            if save is not None and (save / "checkpoint_best.pt").is_file():
                trained[precision] = save / "checkpoint_best.pt"
        if not trained:
            runner.skip("evaluate", "fp32", "no V-FT checkpoint")
            runner.skip("predict", "-", "no V-FT checkpoint")
            return trained
        which = "bf16" if "bf16" in trained else next(iter(trained))
        ckpt = trained[which]
        results = self.work / "evaluate"
        row = runner.command(f"evaluate (V-FT {which} checkpoint)", "fp32",
                             [self.ser, "evaluate", fold, "--checkpoint", ckpt, "--gen-subset", "test",
                              "--results-path", results] + ([] if self.cuda else ["--device", "cpu"]))
        if row.ok and (results / "metrics.json").is_file():
            metrics = json.loads((results / "metrics.json").read_text())
            row.note = f"UA {metrics.get('ua', float('nan')):.3f} on test (a few updates: about chance)"
            runner.write_table()
        for precision in (("bf16", "fp16") if self.cuda else ("bf16",)):
            out = self.work / f"predict_{precision}.jsonl"
            row = runner.command(f"predict (V-FT {which} checkpoint)", precision,
                                 [self.ser, "predict", "--checkpoint", ckpt, corpus, "-o", out,
                                  "--precision", precision, "--no-progress"]
                                 + ([] if self.cuda else ["--device", "cpu"]))
            if row.ok and out.is_file():
                row.note = f"{sum(1 for _ in out.open())} files predicted"
                runner.write_table()
        return trained

    def pseudo_labels(self, fold, stage1, w2v2):
        """``fairseq-ser pseudo-labels run`` on the first stage-1 model that trained; the label folder."""
        runner, labels = self.runner, self.work / "labels"
        ks = [str(k) for k in self.plan.ks]
        if stage1:
            ckpt, source = next(iter(stage1.items()))
            extra, note = [], f"stage-1 model ({source})"
        else:  # no stage-1 model: a layer of the wav2vec 2.0 itself, which the command also takes
            ckpt, extra, note = w2v2, ["--layer", "1"], "no stage-1 model: wav2vec 2.0 layer 1"
        row = runner.command("pseudo-labels run", "fp32",
                             [self.ser, "pseudo-labels", "run", fold, labels, "--checkpoint", ckpt, "--ks", *ks,
                              "--no-progress", *extra], note=note)
        if row.ok:
            devices = set()
            for k in self.plan.ks:
                record = labels / f"km{k}.json"
                if record.is_file():
                    devices.add(json.loads(record.read_text()).get("device", "?"))
            row.note += f"; FAISS on {'/'.join(sorted(devices)) or '?'}, K = {', '.join(ks)}"
            runner.write_table()
            return labels
        made = runner.call("setup: random pseudo-labels (pseudo-labels failed)",
                           lambda row: random_labels(fold, self.work / "random_labels", self.plan.ks))
        return made or labels

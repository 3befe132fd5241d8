"""Checkpoints never run code unless the user says so.

Fast in-process tests: every layout released fairseq checkpoints come in
loads with ``weights_only`` unpickling, and a checkpoint that pickles anything
else (here: an object that unpickles into ``open(marker, "w")``) is refused
with a message naming the file, the offending global and the opt-in.

The command tests give one crafted checkpoint to every command that reads
checkpoints, each run in-process with its argv as a user would type it
(tests/inprocess.py: fairseq-hydra-train through fairseq's own entry point,
fairseq-ser through its main), and check that none of them creates the
marker, and that the opt-in does.
"""

import logging
import pickle

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from fairseq_ser.errors import CheckpointError
from fairseq_ser.models.hf_weights import read_torch_bin
from fairseq_ser.models.checkpoint import load_backbone, read_checkpoint
from fairseq_ser.models.safe_load import TRUST_ENV, load_checkpoint_file

import inprocess
from builders import write_random_labels
from checkpoints import (make_ctc_finetuned, make_wav2vec1, make_wav2vec2, to_hydra_era_layout,
                         to_legacy_args_layout, to_legacy_finetuned_layout)
from commands import CPU_STAGE1, CPU_TAPT, CPU_VFT

OFFENDING = f"{open.__module__}.{open.__qualname__}"  # io.open, as the pickle names it


class CreatesFile:
    """Unpickles into ``open(marker, "w")``: the file appears only if unpickling ran a function the file names."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft(source, out, marker, **save_options):
    """``source`` (a normal cfg-layout checkpoint) with a code-running object in ``extra_state``."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    state["extra_state"]["train_log"] = CreatesFile(marker)
    torch.save(state, out, **save_options)
    return out


@pytest.fixture(scope="module")
def w2v(tmp_path_factory):
    """A tiny untrained wav2vec 2.0 in the layout fairseq 0.12's trainer writes."""
    return make_wav2vec2(str(tmp_path_factory.mktemp("safe") / "w2v.pt"))


@pytest.fixture(autouse=True)
def no_opt_in(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


# layout -> how to make it from the cfg-layout checkpoint; whether plain weights_only loading refuses it
LAYOUTS = {
    "cfg": (lambda src, out: src, False),
    "legacy_args_meters": (lambda src, out: to_legacy_args_layout(src, out), True),
    "legacy_args_fairseq08_meters": (lambda src, out: to_legacy_args_layout(src, out, meters="fairseq08"), True),
    "hydra_era_dictconfig_numpy": (lambda src, out: to_hydra_era_layout(src, out), True),
    "ctc_finetuned_task_state": (lambda src, out: make_ctc_finetuned(src, out), True),
    "legacy_ctc_finetuned": (lambda src, out: to_legacy_finetuned_layout(src, out), True),
    "wav2vec1_args": (lambda src, out: make_wav2vec1(out, "args"), True),
    "wav2vec1_cfg": (lambda src, out: make_wav2vec1(out, "cfg"), False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_released_layouts_load_with_weights_only(layout, w2v, tmp_path):
    make, needs_allow_list = LAYOUTS[layout]
    path = make(w2v, str(tmp_path / f"{layout}.pt"))
    if needs_allow_list:  # the layout really pickles more than torch allows by default
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)
    state = load_checkpoint_file(path)  # without the opt-in: a refusal would raise
    assert "model" in state

    if layout == "legacy_args_meters":
        from fairseq.logging.meters import AverageMeter

        assert state["args"].arch == "wav2vec2"
        meter = state["extra_state"]["train_meters"]["train_loss"]
        assert isinstance(meter, AverageMeter) and meter.avg == 1.5
    elif layout == "legacy_args_fairseq08_meters":
        from fairseq.logging.meters import AverageMeter, StopwatchMeter, TimeMeter

        meters = state["extra_state"]["train_meters"]
        assert isinstance(meters["train_loss"], AverageMeter) and meters["train_loss"].sum == 11.0
        assert isinstance(meters["wps"], TimeMeter) and isinstance(meters["train_wall"], StopwatchMeter)
    elif layout == "hydra_era_dictconfig_numpy":
        assert isinstance(state["cfg"], DictConfig) and OmegaConf.is_struct(state["cfg"])
        assert state["cfg"].model._name == "wav2vec2" and list(state["cfg"].model.latent_temp) == [2.0, 0.5, 0.999]
        best = state["optimizer_history"][-1]["lr_scheduler_state"]["best"]
        assert type(best) is np.float64 and best == 1.25
        assert type(state["extra_state"]["best"]) is np.float64
    elif layout == "ctc_finetuned_task_state":
        from fairseq.data.dictionary import Dictionary

        letters = state["task_state"]["target_dictionary"]
        assert isinstance(letters, Dictionary) and "|" in letters.symbols
    elif layout == "legacy_ctc_finetuned":
        assert state["args"].arch == "wav2vec_ctc" and state["args"].w2v_args.arch == "wav2vec2"
    elif layout.startswith("wav2vec1"):
        return

    # the whole loader on top: same backbone weights as the checkpoint they came from
    expected = torch.load(w2v, weights_only=True)["model"]
    backbone = load_backbone(path)
    assert backbone.weights and all(torch.equal(v, expected[k]) for k, v in backbone.weights.items())
    assert backbone.w2v_args.model._name == "wav2vec2"


# where the code-running object hides: extra_state of each file format torch writes, or inside
# the allowed containers (a DictConfig node, an argparse.Namespace): allowing a class does not
# let what it holds through
CRAFTED = {
    "zip": {},
    "legacy_format": {"_use_new_zipfile_serialization": False},
    "protocol_4": {"pickle_protocol": 4},
}


@pytest.mark.parametrize("how", list(CRAFTED))
def test_crafted_checkpoint_is_refused(how, w2v, tmp_path):
    marker = tmp_path / "ran"
    path = craft(w2v, str(tmp_path / "crafted.pt"), marker, **CRAFTED[how])
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: refused to load") and f"{TRUST_ENV}=1" in message
    if how != "protocol_4":  # its opcodes hide the name from torch's unpickler: the reason is given instead
        assert OFFENDING in message
    assert not marker.exists()


@pytest.mark.parametrize("container", ["dictconfig", "namespace"])
def test_allowed_classes_do_not_let_their_contents_through(container, w2v, tmp_path):
    import argparse

    marker = tmp_path / "ran"
    state = torch.load(w2v, weights_only=True)
    evil = CreatesFile(marker)
    if container == "dictconfig":
        state["cfg"] = OmegaConf.create({**state["cfg"], "hook": evil}, flags={"allow_objects": True})
    else:
        state["args"] = argparse.Namespace(arch="wav2vec2", hook=evil)
    path = str(tmp_path / "crafted.pt")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"refused to load: it pickles {OFFENDING};"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_opt_in_loads_with_full_unpickling_and_says_so(w2v, tmp_path, monkeypatch, caplog):
    marker = tmp_path / "ran"
    path = craft(w2v, str(tmp_path / "crafted.pt"), marker)
    monkeypatch.setenv(TRUST_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="fairseq_ser.models.safe_load"):
        state = read_checkpoint(path)
    assert marker.exists()  # the proof that the refusal tests could fail
    state["extra_state"]["train_log"].close()
    assert any(path in r.getMessage() and "full unpickling" in r.getMessage() for r in caplog.records)


def test_numpy_values_beyond_plain_scalars_are_refused(w2v, tmp_path):
    state = torch.load(w2v, weights_only=True)
    for name, value, why in (("array", np.zeros(3), "numpy._core.multiarray._reconstruct"),
                             ("datetime", np.datetime64("2020-01-01"), "not a plain numeric type")):
        state["extra_state"]["value"] = value
        path = str(tmp_path / f"{name}.pt")
        torch.save(state, path)
        with pytest.raises(CheckpointError, match="refused to load") as e:
            load_checkpoint_file(path)
        assert why in str(e.value), name


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(300))
    for path in (text, noise):
        with pytest.raises(CheckpointError, match=f"{path}: not a PyTorch checkpoint"):
            load_checkpoint_file(str(path))
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint_file(str(tmp_path))
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint dictionary"):
        load_checkpoint_file(str(listed))


def test_hf_pytorch_model_bin_is_read_safely(tmp_path):
    marker = tmp_path / "ran"
    weights = {"encoder.layer_norm.weight": torch.ones(4)}
    torch.save(weights, tmp_path / "good.bin")
    assert torch.equal(read_torch_bin(str(tmp_path / "good.bin"))["encoder.layer_norm.weight"], torch.ones(4))
    crafted = tmp_path / "pytorch_model.bin"
    torch.save({**weights, "hook": CreatesFile(marker)}, crafted)
    with pytest.raises(CheckpointError, match=f"{crafted}: refused to load: it pickles {OFFENDING}; .*{TRUST_ENV}=1"):
        read_torch_bin(str(crafted))
    assert not marker.exists()


# --- every command that reads checkpoints, given the crafted one ---

def training(config, *overrides):
    return ["fairseq-hydra-train", "--config-dir", "config", "--config-name", config, *overrides]


@pytest.fixture(scope="module")
def commands(w2v, synth_corpus, synth_folds, tmp_path_factory):
    """Run every command on the crafted checkpoint; name -> (returncode, output, marker, crafted)."""
    work = tmp_path_factory.mktemp("commands")
    fold = synth_folds / "fold1"
    labels = write_random_labels(fold, work / "labels")
    wav = next(synth_corpus.rglob("*.wav"))
    hf = work / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "wav2vec2", "architectures": ["Wav2Vec2Model"]}')

    def crafted(name):
        marker = work / f"ran_{name}"
        if name == "import-hf":
            path = hf / "pytorch_model.bin"
            torch.save({"masked_spec_embed": torch.zeros(768), "hook": CreatesFile(marker)}, path)
        else:
            path = craft(w2v, str(work / f"crafted_{name}.pt"), marker)
        return str(path), marker

    jobs = {}

    def job(name, argv_of, opt_in=False):
        path, marker = crafted(name)
        jobs[name] = (argv_of(path, work / name), marker, path, opt_in)

    job("vft", lambda p, d: training("vft", f"task.data={fold}", f"model.w2v_path={p}",
                                     f"checkpoint.save_dir={d}", *CPU_VFT, "optimization.max_update=1"))
    job("tapt", lambda p, d: training("tapt", f"task.data={fold}", f"model.w2v_path={p}",
                                      f"checkpoint.save_dir={d}", *CPU_TAPT, "optimization.max_update=1"))
    job("ptapt_stage1", lambda p, d: training("ptapt_stage1", f"task.data={fold}", f"model.w2v_path={p}",
                                              f"checkpoint.save_dir={d}", *CPU_STAGE1, "optimization.max_update=1"))
    job("ptapt", lambda p, d: training(
        "ptapt", f"task.data={fold}", f"task.label_dir={labels}", "task.cluster_labels=[km4,km8]",
        f"model.w2v_path={p}", f"checkpoint.save_dir={d}", "common.cpu=true", "common.fp16=false",
        "dataset.num_workers=0", "dataset.max_tokens=160000", "optimization.max_update=1"))
    # fairseq's own loading of a checkpoint to resume from (the model itself starts from a good file)
    job("fairseq_restore_file", lambda p, d: training(
        "vft", f"task.data={fold}", f"model.w2v_path={w2v}", f"checkpoint.restore_file={p}",
        f"checkpoint.save_dir={d}", *CPU_VFT, "optimization.max_update=1"))
    job("evaluate", lambda p, d: ["fairseq-ser", "evaluate", fold, "--checkpoint", p, "--results-path", d])
    job("predict", lambda p, d: ["fairseq-ser", "predict", "--checkpoint", p, wav, "--no-progress"])
    job("pseudo-labels", lambda p, d: ["fairseq-ser", "pseudo-labels", "run", fold, d, "--checkpoint", p,
                                       "--layer", "1", "--ks", "4", "--no-progress"])
    job("import-hf", lambda p, d: ["fairseq-ser", "import-hf", hf, d / "imported.pt"])
    job("predict_opt_in", lambda p, d: ["fairseq-ser", "predict", "--checkpoint", p, wav, "--no-progress"], opt_in=True)

    results = {}
    for name, (argv, marker, path, opt_in) in jobs.items():
        proc = inprocess.run_command(argv, env={TRUST_ENV: "1" if opt_in else None}, expect_ok=False)
        results[name] = (proc.returncode, proc.stdout + proc.stderr, marker, path)
    return results


@pytest.mark.parametrize("name", ["vft", "tapt", "ptapt_stage1", "ptapt", "evaluate", "predict",
                                  "pseudo-labels", "import-hf"])
def test_every_command_refuses_the_crafted_checkpoint(name, commands):
    returncode, output, marker, path = commands[name]
    assert returncode != 0, output[-3000:]
    assert not marker.exists()
    refusal = f"{path}: refused to load: it pickles {OFFENDING};"
    if name in ("evaluate", "predict", "pseudo-labels", "import-hf"):
        refusal = f"fairseq-ser {name}: error: " + refusal  # the CLI's message, not a traceback
    assert refusal in output, output[-3000:]
    assert f"set {TRUST_ENV}=1" in output


def test_fairseq_own_resume_refuses_it_too(commands):
    # fairseq's load_checkpoint_to_cpu calls torch.load without weights_only, which torch >= 2.6
    # takes as weights_only=True: refused, in fairseq's words
    returncode, output, marker, path = commands["fairseq_restore_file"]
    assert returncode != 0 and not marker.exists()
    assert "Weights only load failed" in output and OFFENDING in output, output[-3000:]


def test_opt_in_lets_a_command_load_it(commands):
    returncode, output, marker, path = commands["predict_opt_in"]
    assert marker.exists(), output[-3000:]
    assert f"{path}: loading with full unpickling because {TRUST_ENV} is set" in output
    # it is no classifier, so the command goes on to refuse it for that
    assert returncode != 0 and "refused to load" not in output


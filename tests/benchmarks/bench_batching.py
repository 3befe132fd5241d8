"""Batching: padding and V-FT training speed of this project's batches against 64 random utterances.

For EmoDB's real lengths and for a generated IEMOCAP-like length distribution,
the training batches come from the project's own code (the ``ser_classification``
task built on manifests with ``config/vft.yaml``'s task and dataset settings,
through its ``get_batch_iterator``), and the reference protocol is fixed
batches of ``dataset.batch_size`` (64) random utterances. Both crop utterances
to ``task.max_sample_size`` (10 s) and pad to the batch's longest, through the
dataset's own collater. The table also shows fairseq's runs of 64
(``task.batching=fixed``), the project's batching before ``min_padding``.

Padding is counted over a full epoch of batches (no compute). Speed: the same
small wav2vec 2.0 (base's CNN kernels and strides at 32 channels, a 2-layer
128-d Transformer; a base model is far too slow on a CPU) runs real V-FT updates
(the project's classifier, criterion, Adam) on ``--updates`` batches of each
batching, picked at evenly spaced quantiles of their padded size, both
starting from the same weights and interleaved so that machine noise hits
both alike; utterances per second = utterances per epoch / (batches per epoch
x mean seconds per timed update).
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from common import EMODB, REPO, machine_description, print_summary, print_table  # noqa: E402

SAMPLE_RATE = 16000
# EmoDB's emotion letters (file name character 6)
EMODB_CLASSES = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
                 "T": "sadness", "N": "neutral"}
# a smaller member of the wav2vec 2.0 base family: base's CNN kernels and strides
# (same 20 ms frames, same receptive field) at 32 channels, 2 Transformer layers of 128
SMALL_SHAPE = {
    "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    "encoder_layers": 2,
    "encoder_embed_dim": 128,
    "encoder_ffn_embed_dim": 512,
    "encoder_attention_heads": 2,
    "conv_pos": 64,
    "conv_pos_groups": 16,
}


# ---------------------------------------------------------------- random models (shared with the other benchmarks)

def backbone_args(shape=None):
    """A wav2vec 2.0 pretraining config: fairseq's defaults (wav2vec2-base) with ``shape`` fields replaced."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"model": {"_name": "wav2vec2", **(shape or {})},
                             "task": {"_name": "audio_pretraining", "normalize": False, "sample_rate": SAMPLE_RATE}})


def random_classifier(class_names, shape=None, seed=0, **overrides):
    """A ``ser_wav2vec2_classifier`` with random weights, built by the model's own ``build_model``."""
    import torch
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    import fairseq_ser

    fairseq_ser.register()
    from fairseq_ser.models.ser_wav2vec2_classifier import SerWav2Vec2Classifier, SerWav2Vec2ClassifierConfig

    torch.manual_seed(seed)
    cfg = merge_with_parent(SerWav2Vec2ClassifierConfig(), OmegaConf.create(
        {"w2v_path": "(random weights)", "w2v_args": backbone_args(shape), **overrides}))
    return SerWav2Vec2Classifier.build_model(cfg, SimpleNamespace(class_names=list(class_names)))


def save_classifier(model, path):
    """Save ``model`` as fairseq-hydra-train saves a classifier (plain-dict cfg), for EmotionClassifier.from_checkpoint."""
    import torch
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.to_container(model.cfg, resolve=True, enum_to_str=True)
    model_cfg["_name"] = "ser_wav2vec2_classifier"
    torch.save({"cfg": {"model": model_cfg, "task": {"_name": "ser_classification", "data": "."}},
                "model": model.state_dict(), "optimizer_history": [], "extra_state": {}}, path)
    return path


# ---------------------------------------------------------------- corpora

def emodb_corpus(root):
    """(relative paths, lengths in samples, labels) of EmoDB's wav files, read from their headers."""
    import soundfile as sf

    wav_dir = Path(root) / "wav"
    names = sorted(p.name for p in wav_dir.glob("*.wav"))
    lengths = [sf.info(str(wav_dir / n)).frames for n in names]
    return wav_dir, names, lengths, [EMODB_CLASSES[n[5]] for n in names]


def iemocap_like_lengths(count, seed, mean=4.5, sigma=0.65, lo=0.6, hi=35.0):
    """Lognormal lengths (seconds) with the given mean; sigma 0.65 gives IEMOCAP's spread (sd about 3.2 s)."""
    rng = np.random.default_rng(seed)
    mu = math.log(mean) - sigma ** 2 / 2
    return np.clip(rng.lognormal(mu, sigma, count), lo, hi)


def write_manifests(folder, root, names, lengths, labels):
    """train.tsv / train.emo / dict.emo.txt in the project's manifest format."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.tsv", "w", encoding="utf-8") as f:
        f.write(f"{root}\n")
        f.writelines(f"{n}\t{int(k)}\n" for n, k in zip(names, lengths))
    (folder / "train.emo").write_text("".join(f"{lab}\n" for lab in labels), encoding="utf-8")
    classes = sorted(set(labels))
    (folder / "dict.emo.txt").write_text("".join(f"{c} {labels.count(c)}\n" for c in classes), encoding="utf-8")


def generated_corpus(folder, count, seed):
    """Manifests of ``count`` IEMOCAP-like utterances; every line names one short placeholder file.

    Only the manifest lengths are used: the timed batches get random audio of
    those lengths (the model's cost does not depend on the samples).
    """
    import soundfile as sf

    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    sf.write(str(audio / "placeholder.wav"), np.zeros(SAMPLE_RATE // 10, dtype=np.float32), SAMPLE_RATE)
    seconds = iemocap_like_lengths(count, seed)
    rng = np.random.default_rng(seed + 1)
    labels = [["neu", "hap", "ang", "sad"][k] for k in rng.integers(0, 4, count)]
    lengths = np.round(seconds * SAMPLE_RATE).astype(np.int64)
    write_manifests(folder / "data", audio, ["placeholder.wav"] * count, lengths, labels)
    return seconds


# ---------------------------------------------------------------- batches

def vft_config():
    """config/vft.yaml with fairseq's defaults for the dataset fields it leaves out."""
    from fairseq.dataclass.configs import DatasetConfig
    from omegaconf import OmegaConf

    yaml = OmegaConf.load(REPO / "config" / "vft.yaml")
    dataset = OmegaConf.merge(OmegaConf.structured(DatasetConfig()), yaml.dataset)
    return yaml, dataset


def project_task(data_dir, **task_overrides):
    """The ser_classification task of config/vft.yaml on ``data_dir``, train split loaded."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf, open_dict

    import fairseq_ser

    fairseq_ser.register()
    from fairseq_ser.tasks.ser_classification import SerClassificationConfig, SerClassificationTask

    yaml, _ = vft_config()
    root = OmegaConf.structured(FairseqConfig())
    with open_dict(root):
        root.task = {**OmegaConf.to_container(yaml.task), "data": str(data_dir), **task_overrides}
    task = SerClassificationTask.setup_task(merge_with_parent(SerClassificationConfig(), root.task))
    task.load_dataset("train")
    return task


def project_batches(task):
    """One epoch of training batches exactly as fairseq's trainer asks the task for them."""
    yaml, dataset = vft_config()
    itr = task.get_batch_iterator(
        dataset=task.dataset("train"), max_tokens=dataset.max_tokens, max_sentences=dataset.batch_size,
        max_positions=None, ignore_invalid_inputs=True,
        required_batch_size_multiple=dataset.required_batch_size_multiple, seed=yaml.common.seed,
        num_workers=0, epoch=1)
    return [np.asarray(b) for b in itr.frozen_batches]


def random_batches(n, batch_size, seed):
    """The reference protocol: shuffle, then consecutive chunks of ``batch_size``."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def batch_stats(batches, cropped):
    """Padding fraction over the epoch, utterances per update, largest padded batch (samples)."""
    seen = np.sort(np.concatenate(batches))
    if not np.array_equal(seen, np.arange(len(cropped))):
        raise AssertionError("an epoch of batches must hold every utterance exactly once")
    padded = np.array([len(b) * cropped[b].max() for b in batches], dtype=np.float64)
    sizes = np.array([len(b) for b in batches])
    return {"batches": len(batches), "padding": 1 - cropped.sum() / padded.sum(), "mean": sizes.mean(),
            "min": sizes.min(), "max": sizes.max(), "largest": padded.max(), "padded": padded}


# ---------------------------------------------------------------- timed V-FT updates

class Trainer:
    """One model + criterion + Adam, doing V-FT updates as fairseq's trainer does (loss / sample_size)."""

    def __init__(self, model, task, lr):
        import torch

        self.model = model.train()
        from fairseq_ser.criterions.ser_cross_entropy import SerCrossEntropyCriterion

        self.criterion = SerCrossEntropyCriterion(task)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def update(self, sample):
        self.optimizer.zero_grad(set_to_none=True)
        loss, sample_size, _ = self.criterion(self.model, sample)
        (loss / sample_size).backward()
        self.optimizer.step()
        return loss.detach().item() / sample_size


def collate(task, batch, synthetic, rng):
    """The dataset's own collater over ``batch`` (real audio, or random audio of the manifest lengths)."""
    import torch

    ds = task.dataset("train")
    if synthetic:
        samples = [{"id": int(i), "source": torch.from_numpy(
                    (rng.standard_normal(int(ds.sizes[i])) * 0.1).astype(np.float32)),
                    "target": ds.targets[i]} for i in batch]
    else:
        samples = [ds[int(i)] for i in batch]
    return ds.collater(samples)


def check_sample(sample, batch, cropped):
    """The collated batch pads exactly as the padding count assumes."""
    mask = sample["net_input"]["padding_mask"]
    longest = int(cropped[batch].max())
    if tuple(mask.shape) != (len(batch), longest):
        raise AssertionError(f"collated batch {tuple(mask.shape)}, expected {(len(batch), longest)}")
    valid = int((~mask).sum())
    if valid != int(cropped[batch].sum()):
        raise AssertionError(f"collated batch has {valid} valid samples, expected {int(cropped[batch].sum())}")


def quantile_picks(padded, count):
    """Indices of ``count`` batches at evenly spaced quantiles of their padded size."""
    order = np.argsort(padded, kind="stable")
    count = min(count, len(order))
    return [int(order[int((q + 0.5) * len(order) / count)]) for q in range(count)]


def time_updates(task, sides, cropped, synthetic, updates, seed, threads):
    """Seconds of each timed update per side; the same starting weights and seeds for every side."""
    import torch

    torch.set_num_threads(threads)
    # the same weights for every side (weight norm rules out deepcopy: load one state into the others)
    models = {name: random_classifier(task.class_names, SMALL_SHAPE, seed=seed) for name in sides}
    first = next(iter(models.values())).state_dict()
    for model in models.values():
        model.load_state_dict(first)
    trainers = {name: Trainer(models[name], task, lr=1e-4) for name in sides}
    rng = np.random.default_rng(seed)
    picks = {name: quantile_picks(stats["padded"], updates) for name, (batches, stats) in sides.items()}
    # a first update of each side, untimed: allocator and thread-pool warm-up; it also checks the batch
    for name, (batches, _) in sides.items():
        batch = batches[picks[name][0]]
        sample = collate(task, batch, synthetic, rng)
        check_sample(sample, batch, cropped)
        with torch.no_grad():
            logits = trainers[name].model(**sample["net_input"])
        if tuple(logits.shape) != (len(batch), len(task.class_names)) or not torch.isfinite(logits).all():
            raise AssertionError(f"{name}: logits {tuple(logits.shape)} for a batch of {len(batch)}")
        torch.manual_seed(seed)
        loss = trainers[name].update(sample)
        if not math.isfinite(loss):
            raise AssertionError(f"{name}: loss {loss}")
    seconds = {name: [] for name in sides}
    for step in range(len(next(iter(picks.values())))):
        for name, (batches, _) in sides.items():
            batch = batches[picks[name][step]]
            sample = collate(task, batch, synthetic, rng)
            check_sample(sample, batch, cropped)
            torch.manual_seed(seed + step)
            start = time.perf_counter()
            trainers[name].update(sample)
            seconds[name].append(time.perf_counter() - start)
    return seconds


# ---------------------------------------------------------------- one corpus

def run_corpus(name, data_dir, synthetic, args):
    task = project_task(data_dir)
    ds = task.dataset("train")
    cropped = np.minimum(np.asarray(ds.sizes, dtype=np.int64), task.cfg.max_sample_size)
    _, dataset = vft_config()
    ours = project_batches(task)
    fixed = project_batches(project_task(data_dir, batching="fixed"))
    reference = random_batches(len(cropped), dataset.batch_size, args.seed)
    stats = {"random 64 (reference)": (reference, batch_stats(reference, cropped)),
             "fairseq runs of 64 (batching=fixed)": (fixed, batch_stats(fixed, cropped)),
             f"project ({task.cfg.batching})": (ours, batch_stats(ours, cropped))}
    ref_name, ours_name = "random 64 (reference)", f"project ({task.cfg.batching})"
    timed = {}
    if args.updates > 0:
        timed = time_updates(task, {ref_name: stats[ref_name], ours_name: stats[ours_name]}, cropped,
                             synthetic, args.updates, args.seed, args.threads)
    rows = []
    for label, (batches, st) in stats.items():
        row = [name, label, st["batches"], f"{st['mean']:.1f} ({st['min']}-{st['max']})",
               f"{100 * st['padding']:.1f} %", f"{st['largest'] / SAMPLE_RATE:.0f}"]
        if label in timed:
            per_update = float(np.mean(timed[label]))
            st["utt_per_s"] = len(cropped) / (st["batches"] * per_update)
            row += [f"{per_update:.2f}", f"{st['utt_per_s']:.1f}"]
        else:
            row += ["-", "-"]
        rows.append(row)
    return rows, stats[ref_name][1], stats[ours_name][1], stats["fairseq runs of 64 (batching=fixed)"][1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="time 2 updates per batching instead of --updates (a minute or two)")
    parser.add_argument("--updates", type=int, default=5,
                        help="timed V-FT updates per batching and corpus; 0 counts padding only (default: %(default)s)")
    parser.add_argument("--utterances", type=int, default=5531,
                        help="utterances of the generated IEMOCAP-like corpus (default: %(default)s, IEMOCAP's 4 classes)")
    parser.add_argument("--emodb", default=str(EMODB),
                        help="EmoDB folder (with wav/); skipped when missing (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the timed updates, the same for both batchings; one "
                        "keeps the ratio steady on a busy machine (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the lengths, the shuffles and the weights")
    args = parser.parse_args(argv)
    if args.quick:
        args.updates = min(args.updates, 2)
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    # fairseq's positional convolution still uses torch's deprecated weight_norm
    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
    # fairseq's crop_to_max_size indexes with a list
    warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
    print(f"machine: {machine_description()}", flush=True)
    start = time.perf_counter()
    rows, summary = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_batching_") as tmp:
        tmp = Path(tmp)
        corpora = []
        if (Path(args.emodb) / "wav").is_dir():
            wav_dir, names, lengths, labels = emodb_corpus(args.emodb)
            write_manifests(tmp / "emodb", wav_dir, names, lengths, labels)
            corpora.append(("emodb", tmp / "emodb", False))
        else:
            print(f"EmoDB not found at {args.emodb}: skipping its rows")
        seconds = generated_corpus(tmp / "iemocap", args.utterances, args.seed)
        print(f"IEMOCAP-like lengths: {len(seconds)} utterances, lognormal (sigma 0.65) clipped to 0.6-35 s: "
              f"mean {seconds.mean():.2f} s, median {np.median(seconds):.2f} s, sd {seconds.std():.2f} s, "
              f"max {seconds.max():.1f} s, {100 * (seconds > 10).mean():.1f} % over the 10 s crop", flush=True)
        corpora.append(("iemocap-like", tmp / "iemocap" / "data", True))
        for name, folder, synthetic in corpora:
            corpus_rows, ref, ours, fixed = run_corpus(name, folder, synthetic, args)
            rows += corpus_rows
            key = "emodb" if name == "emodb" else "iemocap"
            # padded fractions with three decimals (EmoDB's target is under 0.10)
            summary[f"{key}_padding"] = f"{ours['padding']:.3f}"
            summary[f"{key}_padding_fixed"] = f"{fixed['padding']:.3f}"
            summary[f"{key}_padding_ref"] = f"{ref['padding']:.3f}"
            summary[f"{key}_utt_per_update_ratio"] = ours["mean"] / ref["mean"]
            if "utt_per_s" in ours:
                summary[f"{key}_speedup"] = ours["utt_per_s"] / ref["utt_per_s"]
    print_table("V-FT batching: padding over an epoch and timed training updates",
                ["corpus", "batching", "batches", "utterances / update (min-max)", "padding",
                 "largest batch (padded s)", "s / update", "utterances / s"], rows)
    print(f"\nmodel for the timed updates: wav2vec 2.0 base family, {SMALL_SHAPE['encoder_layers']} layers of "
          f"{SMALL_SHAPE['encoder_embed_dim']}, CNN of 32 channels; torch threads: {args.threads}; "
          f"timed updates per batching: {args.updates}; total {time.perf_counter() - start:.0f} s")
    print_summary("batching", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

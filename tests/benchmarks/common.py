"""What every benchmark shares: the machine description, timing, peak memory and the printed report.

Each benchmark prints a table, then ends with one line starting ``SUMMARY`` that
holds its ratios against the baseline it ran side by side; ``run_all.py``
collects those lines.
"""

import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMODB = REPO.parent / "shared" / "corpora" / "emodb"


def machine_description():
    """One line: CPU model, cores this process may use, memory, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


@contextmanager
def timer(results, key):
    """Store the wall seconds of the ``with`` block in ``results[key]``."""
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def run_measured(argv, env=None, cwd=None):
    """Run a command to completion; returns (wall seconds, peak RSS in bytes of it and its children, output).

    ``os.wait4`` gives the resource usage of exactly this child, so measurements
    of successive commands do not mix. A failing command raises with its output.
    """
    start = time.perf_counter()
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=cwd, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{output[-4000:]}")
    return seconds, usage.ru_maxrss * 1024, output


def peak_rss_self():
    """Peak resident memory of this process so far, in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def print_table(title, headers, rows):
    """A Markdown table, so the output can be pasted into the README as it is."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join(" --- " for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def print_summary(name, ratios):
    """The closing line: ``SUMMARY name: key=value ...`` (ratios > 1 favour this project where so stated)."""
    parts = " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in ratios.items())
    print(f"SUMMARY {name}: {parts}", flush=True)


def gib(nbytes):
    return f"{nbytes / 2**30:.2f} GiB"


def emodb_manifest(folder, times=1):
    """Write ``folder/train.tsv`` listing every EmoDB wav ``times`` times over; returns the folder.

    The repeats point at the same files, so a 16x corpus costs no disk space
    beyond the manifest.
    """
    import soundfile as sf

    from fairseq_ser.data.manifest import write_manifest

    wavs = sorted((EMODB / "wav").glob("*.wav"))
    entries = [(w.name, sf.info(str(w)).frames) for w in wavs]
    write_manifest(str(Path(folder) / "train.tsv"), str(EMODB / "wav"), entries * times)
    return Path(folder)


def frame_model_checkpoint(path, channels, layers, embed, frame_dim=512, seed=0):
    """A P-TAPT stage-1 frame emotion model (``ser_frame_emotion``) with random weights, saved as fairseq saves it.

    Its backbone is a wav2vec 2.0 with the standard CNN kernels and strides
    (``channels`` wide), ``layers`` Transformer layers of width ``embed``, then
    Linear + ReLU to ``frame_dim``: the architecture whose features the
    pseudo-label step clusters, untrained. Written once; an existing file is
    reused (features dumped from it stay valid, as its mtime does not change).
    """
    path = Path(path)
    if path.is_file():
        return path
    import warnings
    from types import SimpleNamespace

    import torch
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    import fairseq_ser
    from fairseq_ser.models.ser_frame_emotion import SerFrameEmotionConfig, SerFrameEmotionModel

    fairseq_ser.register()
    conv = f"[({channels}, 10, 5)] + [({channels}, 3, 2)] * 4 + [({channels}, 2, 2)] * 2"
    w2v_args = {"model": {"_name": "wav2vec2", "conv_feature_layers": conv, "encoder_layers": layers,
                          "encoder_embed_dim": embed, "encoder_ffn_embed_dim": 4 * embed,
                          "encoder_attention_heads": max(1, embed // 64)},
                "task": {"_name": "audio_pretraining", "normalize": False}}
    cfg = merge_with_parent(SerFrameEmotionConfig(), OmegaConf.create(
        {"w2v_path": str(path), "w2v_args": w2v_args, "frame_dim": frame_dim}))
    torch.manual_seed(seed)
    classes = ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
    with warnings.catch_warnings():  # fairseq's weight_norm deprecation
        warnings.simplefilter("ignore", FutureWarning)
        model = SerFrameEmotionModel.build_model(cfg, SimpleNamespace(class_names=classes))
    model_cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    model_cfg["_name"] = "ser_frame_emotion"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"args": None, "cfg": {"model": model_cfg, "task": {"_name": "ser_classification"}},
                "model": model.state_dict(), "optimizer_history": [], "extra_state": {}}, tmp)
    os.replace(tmp, path)
    return path

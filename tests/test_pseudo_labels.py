"""P-TAPT pseudo-labels: features, k-means, label files; alignment, restarts, bad inputs, memory."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from commands import BIN, REPO, run_command
from fairseq_ser.cli.main import main
from fairseq_ser.clustering import assign as assign_mod
from fairseq_ser.clustering import dump as dump_mod
from fairseq_ser.clustering import kmeans as kmeans_mod
from fairseq_ser.clustering.dump import align_frames
from fairseq_ser.clustering.features import Wav2Vec2LayerExtractor
from fairseq_ser.data.frame_labels import check_frame_labels
from fairseq_ser.data.manifest import read_manifest, write_manifest
from fairseq_ser.errors import CheckpointError, DataError
from fairseq_ser.frames import num_frames as cnn_frames

KS = ["4", "8"]


def pseudo_labels(data, out, ckpt, *extra, layer=1, nshard=2):
    return ["pseudo-labels", "run", str(data), str(out), "--checkpoint", str(ckpt), "--layer", str(layer),
            "--ks", *KS, "--nshard", str(nshard), "--no-progress", *extra]


def outputs(folder):
    """Every visible file under ``folder`` (relative path -> bytes); hidden names are temporary files."""
    files = {}
    for root, dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = Path(path).read_bytes()
    return files


def visible(files):
    return {k: v for k, v in files.items() if not os.path.basename(k).startswith(".")}


@pytest.fixture(scope="module")
def labelled(synth_folds, pretrained_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels")
    assert main(pseudo_labels(synth_folds / "fold1", out, pretrained_ckpt)) == 0
    return out


def test_whole_step_in_process(labelled, synth_folds, pretrained_ckpt):
    data = synth_folds / "fold1"
    files = outputs(labelled)
    assert not [k for k in files if os.path.basename(k).startswith(".")], "temporary files left behind"
    splits = sorted(p.stem for p in data.glob("*.tsv"))
    record = json.loads((labelled / "labels.json").read_text())
    assert sorted(record["splits"]) == splits and record["ks"] == [4, 8]
    assert record["source"]["layer"] == 1 and record["source"]["dim"] == 48
    for k in (4, 8):
        assert np.load(labelled / f"km{k}.centroids.npy").shape == (k, 48)
        ids = [line.split()[0] for line in (labelled / f"dict.km{k}.txt").read_text().splitlines()]
        assert ids == [str(i) for i in range(k)]
        km = json.loads((labelled / f"km{k}.json").read_text())
        assert 1 <= len(km["objective"]) <= 20 and km["device"] == "cpu"  # FAISS stops once converged
        for split in splits:
            manifest = read_manifest(str(data / f"{split}.tsv"))
            lines = (labelled / f"{split}.km{k}").read_text().splitlines()
            assert len(lines) == len(manifest)
            for line, (_, n) in zip(lines, manifest.entries):
                ids = [int(i) for i in line.split()]
                assert len(ids) == cnn_frames(n) and all(0 <= i < k for i in ids)


def test_labels_are_nearest_centroids_of_the_layer_output(labelled, synth_folds, pretrained_ckpt):
    from fairseq_ser.data.audio import read_audio

    extractor = Wav2Vec2LayerExtractor(str(pretrained_ckpt), 1)
    manifest = read_manifest(str(synth_folds / "fold1" / "valid.tsv"))
    centroids = np.load(labelled / "km8.centroids.npy")
    line = (labelled / "valid.km8").read_text().splitlines()[0]
    feats = extractor.extract(read_audio(manifest.audio_path(0))).astype(np.float16).astype(np.float32)
    nearest = ((feats[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == np.array([int(i) for i in line.split()])).mean() > 0.95


@pytest.mark.e2e
def test_console_command_gives_the_same_files(labelled, synth_folds, pretrained_ckpt, tmp_path):
    proc = run_command(["fairseq-ser"] + pseudo_labels(synth_folds / "fold1", tmp_path / "labels", pretrained_ckpt))
    assert re.search(r"km4: iteration 1/20 objective [\d.e+]+\n", proc.stderr)
    assert "FAISS runs on the CPU" in proc.stderr
    ours, theirs = outputs(tmp_path / "labels"), outputs(labelled)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name] == theirs[name], name


def test_alignment_for_many_lengths(pretrained_ckpt, tmp_path):
    rng = np.random.default_rng(0)
    lengths = [400, 401, 719, 720, 721, 1040, 3333, 16000, 16399, 16400, 24011]
    audio = tmp_path / "audio"
    audio.mkdir()
    for i, n in enumerate(lengths):
        sf.write(audio / f"u{i}.wav", (rng.standard_normal(n) * 0.1).astype(np.float32), 16000)
    data = tmp_path / "data"
    write_manifest(str(data / "train.tsv"), str(audio), [(f"u{i}.wav", n) for i, n in enumerate(lengths)])
    assert main(pseudo_labels(data, tmp_path / "out", pretrained_ckpt, layer=0, nshard=3)) == 0
    extractor = Wav2Vec2LayerExtractor(str(pretrained_ckpt), 0)
    lines = (tmp_path / "out" / "train.km4").read_text().splitlines()
    assert [len(line.split()) for line in lines] == [cnn_frames(n) for n in lengths]
    assert [extractor.num_frames(n) for n in lengths] == [cnn_frames(n) for n in lengths]
    assert cnn_frames(400) == 1 and len(lines[0].split()) == 1


def test_one_frame_rule():
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert align_frames(feats, 4, "u").shape == (4, 3)
    assert np.array_equal(align_frames(feats, 3, "u"), feats[:3])  # one extra frame: dropped
    padded = align_frames(feats, 5, "u")  # one frame short: the last frame repeats
    assert np.array_equal(padded[4], feats[3]) and np.array_equal(padded[:4], feats)
    with pytest.raises(DataError, match=r"spk1_x\.wav.*gave 4 frames.*gives 6"):
        align_frames(feats, 6, "train.tsv:3 (spk1_x.wav)")


class Interrupt(Exception):
    pass


def _fail_after(monkeypatch, module, name, calls):
    real = getattr(module, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        if count["n"] == calls:
            raise Interrupt(f"killed in {name}")
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("where", ["dump", "extract", "kmeans", "assign"])
def test_restart_after_interruption_gives_the_same_files(where, labelled, synth_folds, pretrained_ckpt,
                                                         tmp_path, monkeypatch):
    out = tmp_path / "labels"
    argv = pseudo_labels(synth_folds / "fold1", out, pretrained_ckpt)
    if where == "dump":  # after the first shard
        _fail_after(monkeypatch, dump_mod, "dump_shard", 1)
    elif where == "extract":  # in the middle of the second shard's features
        _fail_after(monkeypatch, Wav2Vec2LayerExtractor, "extract", 20)
    elif where == "kmeans":  # after the first K
        _fail_after(monkeypatch, kmeans_mod, "_learn_one", 1)
    else:  # after the first shard's labels
        _fail_after(monkeypatch, assign_mod, "assign_shard", 1)
    with pytest.raises(Interrupt):
        main(argv)
    partial = outputs(out)
    assert not [k for k in partial if os.path.basename(k).startswith(".")], "temporary files left behind"
    if where in ("dump", "extract"):
        assert (out / "features" / "train_0_2.json").is_file() and not (out / "features" / "train_1_2.json").exists()
        with pytest.raises(DataError, match=r"train_1_2\.json: features of 'train' shard 1 of 2 are missing"):
            kmeans_mod.learn_kmeans(str(out), ["train"], [4], nshard=2)
    monkeypatch.undo()
    # what a SIGKILL leaves behind: a temporary file under a name no reader looks for
    (out / "features" / ".train_1_2.abc.tmp.npy").write_bytes(b"half")
    assert main(argv) == 0
    again = visible(outputs(out))
    full = outputs(labelled)
    assert again.keys() == full.keys()
    for name in again:
        assert again[name] == full[name], name


def test_hubert_pretraining_task_reads_the_labels(labelled, synth_folds):
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig, HubertPretrainingTask

    cfg = HubertPretrainingConfig(data=str(synth_folds / "fold1"), label_dir=str(labelled),
                                  labels=["km4", "km8"], label_rate=50.0, sample_rate=16000)
    task = HubertPretrainingTask.setup_task(cfg)
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    assert len(dataset) == len(read_manifest(str(synth_folds / "fold1" / "valid.tsv")))
    for k, dictionary in zip((4, 8), task.dictionaries):
        lines = (labelled / f"valid.km{k}").read_text().splitlines()
        for i in range(len(dataset)):
            item = dataset[i]
            label = item["label_list"][(4, 8).index(k)]
            assert [dictionary[j] for j in label.tolist()] == lines[item["id"]].split()


def test_k_larger_than_the_sample(labelled, capsys):
    with pytest.raises(DataError, match=r"K=100000 is larger than the \d+ frames sampled"):
        kmeans_mod.learn_kmeans(str(labelled), ["train"], [4, 100000], nshard=2)
    assert main(["pseudo-labels", "kmeans", str(labelled), "--ks", "50", "--nshard", "2",
                 "--max-sample-frames", "10"]) == 2
    assert "K=50 is larger than the 10 frames sampled" in capsys.readouterr().err


class Narrow:
    """8-dim random features: k-means settings without the cost of a model."""

    dim = 8

    def describe(self):
        return {"extractor": "narrow", "checkpoint": "none", "layer": None}

    def num_frames(self, n):
        return cnn_frames(n)

    def extract(self, wav):
        rng = np.random.default_rng(len(wav))
        return rng.standard_normal((self.num_frames(len(wav)), self.dim)).astype(np.float32)


def test_each_k_samples_at_most_points_per_centroid(synth_folds, tmp_path, capsys):
    data, out = synth_folds / "fold1", tmp_path / "labels"
    dump_mod.dump_split(Narrow(), str(data), "train", str(out), progress=False)
    total = dump_mod.load_shard(str(out), "train", 0, 1).meta["num_frames"]
    assert total > 12 * 8
    settings = dict(max_points_per_centroid=12, min_sample_frames=0, niter=3)
    records = kmeans_mod.learn_kmeans(str(out), ["train"], [4, 8], **settings)
    for k in (4, 8):
        assert records[k]["sample"]["num_frames"] == 12 * k and records[k]["max_points_per_centroid"] == 12
        counts = [int(line.split()[1]) for line in (out / f"dict.km{k}.txt").read_text().splitlines()]
        assert sum(counts) == 12 * k  # counted on the frames it was learned on
    again = kmeans_mod.learn_kmeans(str(out), ["train"], [4, 8], **settings)
    assert again == records  # same settings: nothing learned again
    # the floor lets a small K sample more; the cap of every sample still applies
    floor = kmeans_mod.learn_kmeans(str(out), ["train"], [4, 8], **{**settings, "min_sample_frames": 60})
    assert [floor[k]["sample"]["num_frames"] for k in (4, 8)] == [60, 96]
    assert kmeans_mod.learn_kmeans(str(out), ["train"], [4], max_frames=30, niter=3)[4]["sample"]["num_frames"] == 30
    assert kmeans_mod.learn_kmeans(str(out), ["train"], [4], niter=3)[4]["sample"]["num_frames"] == total
    assert main(["pseudo-labels", "kmeans", str(out), "--ks", "4", "--max-points-per-centroid", "0"]) == 2
    assert "--max-points-per-centroid 0, --min-sample-frames 65536: must be" in capsys.readouterr().err


def test_faiss_blas_kernels_follow_the_cpu_flags(tmp_path):
    from fairseq_ser.clustering.faiss_import import cpu_flags, openblas_core_type

    avx512 = {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx2", "fma"}
    assert openblas_core_type(avx512) == "SkylakeX"
    assert openblas_core_type({"avx2", "fma", "sse4_2"}) == "Haswell"
    assert openblas_core_type({"sse2"}) is None and openblas_core_type(set()) is None
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(str(tmp_path / "absent")) == set()
    # in a fresh process: the choice reaches FAISS's own OpenBLAS, and a user's choice is kept
    probe = ("import os, sys; from fairseq_ser.clustering.faiss_import import import_faiss; import_faiss(); "
             "from threadpoolctl import threadpool_info; "
             "print(os.environ.get('OPENBLAS_CORETYPE'), [i.get('architecture') for i in threadpool_info() "
             "if i.get('internal_api') == 'openblas' and 'faiss' in i['filepath']])")
    expected = openblas_core_type(cpu_flags())
    for preset in (None, "Haswell"):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if preset:
            env["OPENBLAS_CORETYPE"] = preset
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        chosen, arch = proc.stdout.split(" ", 1)
        want = preset or expected
        assert chosen == str(want)
        if want is not None and "[]" not in arch:  # a FAISS build with its own OpenBLAS
            assert want.lower() in arch.lower(), arch


def test_features_from_another_layer_or_checkpoint_are_refused(labelled, synth_folds, pretrained_ckpt,
                                                              legacy_ckpt, capsys):
    data = synth_folds / "fold1"
    for ckpt, layer in ((pretrained_ckpt, 2), (legacy_ckpt, 1)):
        code = main(["pseudo-labels", "dump", str(data), str(labelled), "--checkpoint", str(ckpt),
                     "--layer", str(layer), "--nshard", "2", "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert "these features were produced by wav2vec2_layer of" in err and "use another LABEL_DIR" in err
    with pytest.raises(CheckpointError, match="--layer 3 is out of range.*2 Transformer layers"):
        Wav2Vec2LayerExtractor(str(pretrained_ckpt), 3)
    assert main(["pseudo-labels", "dump", str(data), str(labelled), "--checkpoint", str(pretrained_ckpt)]) == 2
    assert "pass --layer L" in capsys.readouterr().err


def test_frame_emotion_checkpoints_go_to_their_own_loader(tmp_path):
    import torch

    from fairseq_ser.clustering.features import load_extractor

    path = tmp_path / "stage1.pt"
    torch.save({"cfg": {"model": {"_name": "ser_frame_emotion"}}, "model": {}}, path)
    with pytest.raises(CheckpointError, match="--layer is only for plain wav2vec 2.0"):
        load_extractor(str(path), layer=3)
    with pytest.raises(CheckpointError, match="ser_frame_emotion checkpoint without its backbone config"):
        load_extractor(str(path))


def test_label_file_of_another_manifest_is_refused(labelled, synth_folds, tmp_path):
    def check_label_file(path, manifest):
        check_frame_labels(path, [n for _, n in read_manifest(manifest).entries], 4, manifest)

    fold2 = synth_folds / "fold2"
    with pytest.raises(DataError, match=r"valid\.km4.*(labels for|lines but)"):
        check_label_file(str(labelled / "valid.km4"), str(fold2 / "valid.tsv"))
    lines = (labelled / "valid.km4").read_text().splitlines()
    short = tmp_path / "valid.km4"
    short.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"has \d+ lines but .*valid\.tsv lists"):
        check_label_file(str(short), str(synth_folds / "fold1" / "valid.tsv"))
    trimmed = tmp_path / "trimmed.km4"
    trimmed.write_text(" ".join(lines[0].split()[:-1]) + "\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"trimmed\.km4:1: \d+ labels for .* frames"):
        check_label_file(str(trimmed), str(synth_folds / "fold1" / "valid.tsv"))


def test_sharded_steps_match_the_whole_step(labelled, synth_folds, pretrained_ckpt, tmp_path):
    data, out = synth_folds / "fold1", tmp_path / "labels"
    common = ["--nshard", "2", "--no-progress"]
    for rank in ("1", "0"):
        assert main(["pseudo-labels", "dump", str(data), str(out), "--checkpoint", str(pretrained_ckpt),
                     "--layer", "1", "--rank", rank] + common) == 0
    assert main(["pseudo-labels", "kmeans", str(out), "--ks"] + KS + common) == 0
    assert main(["pseudo-labels", "assign", str(data), str(out), "--splits", "valid", "--rank", "0"] + common) == 0
    assert not (out / "valid.km4").exists()  # shard 1 not labelled yet
    assert main(["pseudo-labels", "assign", str(data), str(out), "--splits", "valid", "--rank", "1"] + common) == 0
    for k in KS:
        assert (out / f"valid.km{k}").read_bytes() == (labelled / f"valid.km{k}").read_bytes()


MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from fairseq_ser.clustering.assign import assign_split
from fairseq_ser.clustering.dump import dump_split
from fairseq_ser.clustering.kmeans import learn_kmeans
from fairseq_ser.frames import num_frames as cnn_frames

class Wide:  # 512-dim features, like the stage-1 emotion model's, without its cost
    dim = 512
    def describe(self):
        return {"extractor": "wide", "checkpoint": "none", "layer": None}
    def num_frames(self, n):
        return cnn_frames(n)
    def extract(self, wav):
        rng = np.random.default_rng(len(wav))
        return rng.standard_normal((self.num_frames(len(wav)), self.dim)).astype(np.float32)

data, out = sys.argv[1], sys.argv[2]
dump_split(Wide(), data, "train", out, nshard=2, dtype="float32", progress=False)
learn_kmeans(out, ["train"], [4, 8], nshard=2, max_frames=4000, niter=5)
assign_split(out, data, "train", [4, 8], nshard=2, chunk_frames=2000, progress=False)
# VmHWM: ru_maxrss would carry over the forking pytest process's peak across exec
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("PEAK", hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_is_bounded(synth_folds, tmp_path):
    """Peak memory does not grow with the corpus: 1x and 40x the same audio, 512-dim features, 2 shards."""
    manifest = read_manifest(str(synth_folds / "fold1" / "train.tsv"))
    peaks = {}
    for times in (1, 40):
        data = tmp_path / f"x{times}"
        write_manifest(str(data / "train.tsv"), manifest.root, manifest.entries * times)
        proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(data), str(tmp_path / f"out{times}")],
                              capture_output=True, text=True, timeout=600, cwd=REPO,
                              env=dict(os.environ, OMP_NUM_THREADS="2"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[times] = int(proc.stdout.split("PEAK")[1]) / 1024
        size = os.path.getsize(tmp_path / f"out{times}" / "features" / "train_0_2.npy") * 2 / 2**20
        print(f"x{times}: {size:.0f} MiB of features, peak RSS {peaks[times]:.0f} MiB")
        assert len((tmp_path / f"out{times}" / "train.km8").read_text().splitlines()) == len(manifest) * times
    assert peaks[40] - peaks[1] < 25, peaks


@pytest.mark.e2e
def test_sigkill_after_the_first_shard_then_rerun(synth_folds, pretrained_ckpt, tmp_path):
    """The real command killed with SIGKILL once its first shard is on disk, then run again."""
    import signal
    import subprocess
    import time

    full = tmp_path / "full"
    assert main(pseudo_labels(synth_folds / "fold1", full, pretrained_ckpt, nshard=4)) == 0
    out = tmp_path / "killed"
    argv = pseudo_labels(synth_folds / "fold1", out, pretrained_ckpt, nshard=4)
    proc = subprocess.Popen([str(BIN / "fairseq-ser"), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / "features" / "train_0_4.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the command never finished its first shard"
    assert not (out / "features" / "test_3_4.json").exists(), "the kill came too late to interrupt anything"
    assert main(argv) == 0
    again, expected = visible(outputs(out)), outputs(full)
    assert again.keys() == expected.keys()
    for name in again:
        assert again[name] == expected[name], name

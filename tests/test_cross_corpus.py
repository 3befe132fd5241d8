"""Cross-corpus scoring: the class match, ``--classes shared``, the union of another corpus's test splits, the table.

The other "corpora" are the synthetic folds relabelled: ``other`` keeps hap
and ang and renames neu, sad to fea, sur (two shared classes, two only in the
data); ``disjoint`` shares no class with the classifier (fold1's neu, hap,
ang, sad). The untrained classifier of the fixtures favours neu, a class
``other`` does not share, so an argmax over every class would show.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fairseq_ser import metrics
from fairseq_ser.data.manifest import read_label_dict, read_labels, read_manifest
from fairseq_ser.errors import DataError, SerError
from fairseq_ser.evaluation import evaluate
from fairseq_ser.experiments.cross_corpus import (ALSO_TEST_KEYS, also_test_entry, parse_also_test,
                                                  score_also_test, write_union_test)
from fairseq_ser.experiments.report import cross_corpus, cross_corpus_tables

import inprocess

OTHER = {"neu": "fea", "hap": "hap", "ang": "ang", "sad": "sur"}
DISJOINT = {"neu": "bor", "hap": "dis", "ang": "fea", "sad": "sur"}


def relabelled(synth_folds, out, mapping):
    """A copy of the fold folders (manifests, labels, dictionary) with every label renamed by ``mapping``."""
    for fold in ("fold1", "fold2"):
        src, dst = synth_folds / fold, out / fold
        dst.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            shutil.copy(src / f"{split}.tsv", dst / f"{split}.tsv")
            labels = (src / f"{split}.emo").read_text().split()
            (dst / f"{split}.emo").write_text("".join(mapping[label] + "\n" for label in labels))
        lines = (src / "dict.emo.txt").read_text().splitlines()
        (dst / "dict.emo.txt").write_text("".join(mapping[line.split()[0]] + " " + line.split()[1] + "\n"
                                                  for line in lines))
    return out


@pytest.fixture(scope="module")
def other(synth_folds, tmp_path_factory):
    return relabelled(synth_folds, tmp_path_factory.mktemp("other"), OTHER)


@pytest.fixture(scope="module")
def disjoint(synth_folds, tmp_path_factory):
    return relabelled(synth_folds, tmp_path_factory.mktemp("disjoint"), DISJOINT)


@pytest.fixture(scope="module")
def own_fold1(classifier_ckpt, synth_folds, tmp_path_factory):
    """The classifier on its own fold1 test split, every class (today's behaviour)."""
    return evaluate(str(synth_folds / "fold1"), str(classifier_ckpt), "test",
                    str(tmp_path_factory.mktemp("own1")), device="cpu", progress=False)


@pytest.fixture(scope="module")
def shared_fold1(classifier_ckpt, other, tmp_path_factory):
    return evaluate(str(other / "fold1"), str(classifier_ckpt), "test", str(tmp_path_factory.mktemp("shared1")),
                    device="cpu", progress=False, classes="shared")


def read_predictions(results):
    with open(results / "predictions.tsv", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_the_class_match_is_reported(classifier_ckpt, synth_folds, own_fold1, shared_fold1):
    model = read_label_dict(str(synth_folds / "fold1" / "dict.emo.txt"))
    assert sorted(model) == ["ang", "hap", "neu", "sad"]
    assert shared_fold1["classes_shared"] == [n for n in model if n in ("hap", "ang")]
    assert shared_fold1["classes_model_only"] == [n for n in model if n in ("neu", "sad")]
    assert shared_fold1["classes_data_only"] == [OTHER[n] for n in model if n in ("neu", "sad")]
    stored = json.loads(Path(shared_fold1["results_path"], "metrics.json").read_text())
    for key in ("classes_shared", "classes_model_only", "classes_data_only", "num_dropped"):
        assert stored[key] == shared_fold1[key]
    assert stored["class_protocol"] == "shared"
    # the model's own data: every class shared, nothing dropped, scored as before
    assert own_fold1["classes_shared"] == model and own_fold1["classes_model_only"] == []
    assert own_fold1["classes_data_only"] == [] and own_fold1["num_dropped"] == 0
    assert own_fold1["classes"] == model and own_fold1["class_protocol"] == "all"


def test_shared_scores_only_shared_utterances_over_the_shared_classes(other, own_fold1, shared_fold1):
    labels = read_labels(str(other / "fold1" / "test.emo"))
    shared = shared_fold1["classes_shared"]
    rows = read_predictions(Path(shared_fold1["results_path"]))
    assert len(rows) == sum(label in shared for label in labels) == shared_fold1["num_utterances"]
    assert shared_fold1["num_dropped"] == sum(label not in shared for label in labels) > 0
    assert shared_fold1["dropped"] == {c: labels.count(c) for c in ("fea", "sur") if c in labels}
    assert list(rows[0])[4:] == [f"p_{n}" for n in shared]
    for row in rows:
        assert row["reference"] in shared and row["prediction"] in shared
        p = np.array([float(row[f"p_{n}"]) for n in shared])
        assert abs(p.sum() - 1) < 1e-4 and row["prediction"] == shared[int(p.argmax())]

    # the same utterances scored over every class: the shared probabilities are those, renormalised
    everything = {r["path"]: r for r in read_predictions(Path(own_fold1["results_path"]))}
    assert any(everything[row["path"]]["prediction"] not in shared for row in rows)   # the test's power
    for row in rows:
        full = np.array([float(everything[row["path"]][f"p_{n}"]) for n in shared])
        assert np.allclose([float(row[f"p_{n}"]) for n in shared], full / full.sum(), atol=1e-4)

    # the metrics are those of the predictions
    cm = metrics.confusion_matrix([shared.index(r["reference"]) for r in rows],
                                  [shared.index(r["prediction"]) for r in rows], len(shared))
    assert shared_fold1["confusion_matrix"] == cm.tolist()
    assert shared_fold1["classes"] == shared
    assert shared_fold1["ua"] == pytest.approx(metrics.unweighted_accuracy(cm))
    assert shared_fold1["wa"] == pytest.approx(np.mean([r["reference"] == r["prediction"] for r in rows]))


def test_all_refuses_labels_the_model_does_not_know(classifier_ckpt, other, tmp_path):
    with pytest.raises(DataError) as e:
        evaluate(str(other / "fold1"), str(classifier_ckpt), "test", str(tmp_path), device="cpu", progress=False)
    message = str(e.value)
    assert str(other / "fold1" / "test.emo") in message and "--classes shared" in message
    assert "fea" in message and "sur" in message and "ang" in message
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("classes", ["all", "shared"])
def test_data_sharing_no_class_is_refused(classifier_ckpt, disjoint, tmp_path, classes):
    with pytest.raises(DataError) as e:
        evaluate(str(disjoint / "fold1"), str(classifier_ckpt), "test", str(tmp_path), device="cpu",
                 progress=False, classes=classes)
    message = str(e.value)
    assert str(disjoint / "fold1") in message and "shares no class" in message
    for name in ("neu", "hap", "ang", "sad", "bor", "dis", "fea", "sur"):
        assert name in message


def test_the_command_prints_the_match_and_suggests_shared(classifier_ckpt, other, tmp_path):
    proc = inprocess.run_command(["fairseq-ser", "evaluate", other / "fold1", "--checkpoint", classifier_ckpt,
                                  "--device", "cpu", "--no-progress"], expect_ok=False)
    assert proc.returncode == 2 and "--classes shared" in proc.stderr
    proc = inprocess.run_command(["fairseq-ser", "evaluate", other / "fold1", "--checkpoint", classifier_ckpt,
                                  "--classes", "shared", "--results-path", tmp_path, "--device", "cpu",
                                  "--no-progress"])
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert f"classes shared with the data: {', '.join(summary['classes_shared'])}" in proc.stdout
    assert f"only in the data: {', '.join(summary['classes_data_only'])}" in proc.stdout
    assert f"dropped {summary['num_dropped']}" in proc.stdout


def test_the_union_of_test_splits_holds_each_utterance_once(other, tmp_path):
    both = [read_manifest(str(other / f / "test.tsv")) for f in ("fold1", "fold2")]
    expected = [m.audio_path(i) for m in both for i in range(len(m))]
    assert write_union_test(str(other), str(tmp_path / "union")) == ["fold1", "fold2"]
    union = read_manifest(str(tmp_path / "union" / "test.tsv"))
    assert [union.audio_path(i) for i in range(len(union))] == expected
    assert read_labels(str(tmp_path / "union" / "test.emo")) == sum(
        (read_labels(str(other / f / "test.emo")) for f in ("fold1", "fold2")), [])

    # a fold whose test split repeats another's: scored once; the same file under two labels: refused
    twice = tmp_path / "twice"
    shutil.copytree(other / "fold1", twice / "fold1")
    shutil.copytree(other / "fold1", twice / "fold2")
    write_union_test(str(twice), str(tmp_path / "union2"))
    assert len(read_manifest(str(tmp_path / "union2" / "test.tsv"))) == len(both[0])
    labels = (twice / "fold2" / "test.emo").read_text().split()
    (twice / "fold2" / "test.emo").write_text("".join(("ang" if x == "hap" else "hap") + "\n" for x in labels))
    with pytest.raises(DataError, match="labelled"):
        write_union_test(str(twice), str(tmp_path / "union3"))


def test_parse_also_test(other):
    assert parse_also_test([f"other={other}"]) == {"other": str(other)}
    for bad, match in ((str(other), "NAME=FOLDS_DIR"), (f"a/b={other}", "NAME must be"),
                       ("x=/no/such/folder", "not found")):
        with pytest.raises(SerError, match=match):
            parse_also_test([bad])
    with pytest.raises(SerError, match="twice"):
        parse_also_test([f"o={other}", f"o={other}"])


def test_the_cross_corpus_table_agrees_with_the_runs(classifier_ckpt, synth_folds, other, own_fold1, tmp_path):
    also = score_also_test(str(classifier_ckpt), str(other), str(tmp_path / "eval-other"), "cpu", False)
    n_tests = sum(len(read_labels(str(other / f / "test.emo"))) for f in ("fold1", "fold2"))
    assert also["num_utterances"] + also["num_dropped"] == n_tests
    assert also["folds"] == ["fold1", "fold2"] and also["corpus"] == str(other)
    assert json.loads((tmp_path / "eval-other" / "metrics.json").read_text())["corpus"] == str(other)
    entry = also_test_entry(also)
    assert set(entry) == set(ALSO_TEST_KEYS)

    own2 = evaluate(str(synth_folds / "fold2"), str(classifier_ckpt), "test", str(tmp_path / "own2"),
                    device="cpu", progress=False)
    # two folds x two runs: real summaries, plus made-up scores so that every cell has a spread
    records = {"vft": {"fold1": [], "fold2": []}}
    for fold, own in (("fold1", own_fold1), ("fold2", own2)):
        for run, shift in ((1, 0.0), (2, 0.1)):
            fake = dict(entry, ua=entry["ua"] * (1 - shift), wa=entry["wa"] * (1 - shift) + shift / 2)
            records["vft"][fold].append(dict(own, run=run, path=f"vft/{fold}/run{run}",
                                             also_test={"other": entry if run == 1 else fake}))
    cross = cross_corpus(records, {"vft": "V-FT"}, "synth")
    assert cross["test_corpora"] == ["synth", "other"]
    runs = [r for f in records["vft"].values() for r in f]
    cells = cross["methods"]["vft"]["cells"]
    for key in ("ua", "wa", "macro_f1"):
        own_values = [100 * r[key] for r in runs]
        other_values = [100 * r["also_test"]["other"][key] for r in runs]
        assert cells["synth"][key]["mean"] == pytest.approx(np.mean(own_values))
        assert cells["synth"][key]["std"] == pytest.approx(np.std(own_values))
        assert cells["other"][key]["mean"] == pytest.approx(np.mean(other_values))
        assert cells["other"][key]["std"] == pytest.approx(np.std(other_values))
    assert cells["other"]["classes_shared"] == also["classes_shared"] and cells["other"]["runs"] == 4
    assert cells["other"]["num_utterances"] == [also["num_utterances"]]

    markdown = cross_corpus_tables(cross)
    ua = next(line for line in markdown.split("### UA")[1].splitlines() if line.startswith("| V-FT"))
    assert ua == (f"| V-FT (synth) | {cells['synth']['ua']['mean']:.1f} ± {cells['synth']['ua']['std']:.1f} | "
                  f"{cells['other']['ua']['mean']:.1f} ± {cells['other']['ua']['std']:.1f} |")
    assert f"shared classes {', '.join(also['classes_shared'])}" in markdown

    del records["vft"]["fold2"][1]["also_test"]
    with pytest.raises(SerError, match="vft/fold2/run2"):
        cross_corpus(records, {"vft": "V-FT"}, "synth")
    with pytest.raises(SerError, match="cross-validated corpus"):
        cross_corpus(records, {"vft": "V-FT"}, "other")


def test_cv_also_test_scores_every_run_and_adds_the_table(pretrained_ckpt, synth_folds, other, tmp_path, monkeypatch):
    from commands import CPU_VFT
    from fairseq_ser.experiments import stages

    monkeypatch.setattr(stages, "run_logged", inprocess.run_logged)
    root = tmp_path / "synth"
    root.mkdir()
    (root / "fold1").symlink_to(synth_folds / "fold1", target_is_directory=True)
    out = tmp_path / "cv"

    def cv(*extra):
        return inprocess.run_command(["fairseq-ser", "cv", "--methods", "vft", "--manifests", root, "--checkpoint",
                                      pretrained_ckpt, "--runs", "2", "--out", out, "--no-progress", *extra,
                                      *CPU_VFT, "optimization.max_update=2"])

    cv("--also-test", f"other={other}")
    records = [json.loads((out / f"vft/fold1/run{r}/metrics.json").read_text()) for r in (1, 2)]
    for r, record in zip((1, 2), records):
        entry = record["also_test"]["other"]
        assert set(entry) == set(ALSO_TEST_KEYS) and entry["classes_shared"] == ["ang", "hap"]
        union = n_lines(other / "fold1" / "test.tsv") + n_lines(other / "fold2" / "test.tsv")
        assert entry["num_utterances"] + entry["num_dropped"] == union
        assert (out / f"vft/fold1/run{r}/eval-other/predictions.tsv").is_file()
    results = json.loads((out / "results.json").read_text())
    cell = results["cross_corpus"]["methods"]["vft"]["cells"]["other"]
    assert cell["ua"]["mean"] == pytest.approx(np.mean([100 * r["also_test"]["other"]["ua"] for r in records]))
    assert results["cross_corpus"]["test_corpora"] == ["synth", "other"]
    md = (out / "results.md").read_text()
    assert "## Cross-corpus: train corpus x test corpus" in md and "| V-FT (synth) |" in md

    # a corpus added later: the runs are only scored on it, nothing trains again
    proc = cv("--also-test", f"other={other}", "--also-test", f"again={other}")
    assert ": running" not in proc.stdout
    assert "[vft/fold1/run1] again (shared classes ang, hap)" in proc.stdout
    assert "[vft/fold1/run1] other" not in proc.stdout
    again = json.loads((out / "vft/fold1/run1/metrics.json").read_text())["also_test"]
    assert again["again"]["ua"] == pytest.approx(again["other"]["ua"])
    assert "again" in json.loads((out / "results.json").read_text())["cross_corpus"]["test_corpora"]


def n_lines(manifest):
    return len(Path(manifest).read_text().splitlines()) - 1

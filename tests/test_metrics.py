"""UA, WA and F1 against confusion matrices worked out by hand."""

import json

import numpy as np
import pytest

from fairseq_ser import metrics


def test_confusion_matrix_counts():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_three_class_matrix_by_hand():
    # rows reference, columns prediction
    cm = np.array([[8, 2, 0],
                   [1, 3, 0],
                   [2, 2, 2]])
    # recalls 8/10, 3/4, 2/6 -> UA = (0.8 + 0.75 + 1/3) / 3
    assert metrics.unweighted_accuracy(cm) == pytest.approx((0.8 + 0.75 + 1 / 3) / 3)
    # WA = 13 / 20
    assert metrics.weighted_accuracy(cm) == pytest.approx(0.65)
    # precisions 8/11, 3/7, 2/2; F1 = 2 tp / (support + predicted)
    f1 = [16 / 21, 6 / 11, 4 / 8]
    assert metrics.per_class_f1(cm) == pytest.approx(f1)
    assert metrics.macro_f1(cm) == pytest.approx(sum(f1) / 3)
    assert metrics.per_class_precision(cm) == pytest.approx([8 / 11, 3 / 7, 1.0])


def test_class_without_test_examples_is_left_out_not_nan():
    # class 2 ("dis") never occurs in the reference and is never predicted
    cm = np.array([[3, 1, 0],
                   [1, 1, 0],
                   [0, 0, 0]])
    assert metrics.per_class_recall(cm) == [0.75, 0.5, None]
    assert metrics.unweighted_accuracy(cm) == pytest.approx(0.625)
    assert metrics.per_class_f1(cm)[2] is None
    assert metrics.macro_f1(cm) == pytest.approx((6 / 8 + 2 / 4) / 2)
    summary = metrics.summarize(cm, ["ang", "sad", "dis"])
    text = json.dumps(summary)
    assert "NaN" not in text
    assert summary["recall"]["dis"] is None
    assert "dis" in metrics.format_report(summary)


def test_absent_class_that_is_predicted_counts_as_zero_f1():
    cm = np.array([[2, 0, 1],
                   [0, 2, 0],
                   [0, 0, 0]])
    # class 2 has no support but one false positive: precision 0, F1 0, no recall
    assert metrics.per_class_recall(cm)[2] is None
    assert metrics.per_class_f1(cm)[2] == 0.0
    assert metrics.unweighted_accuracy(cm) == pytest.approx((2 / 3 + 1.0) / 2)
    assert metrics.macro_f1(cm) == pytest.approx((0.8 + 1.0 + 0.0) / 3)


def test_empty_matrix_gives_zeros():
    cm = np.zeros((4, 4), dtype=int)
    assert metrics.unweighted_accuracy(cm) == 0.0
    assert metrics.weighted_accuracy(cm) == 0.0
    assert metrics.macro_f1(cm) == 0.0


def test_micro_f1_equals_wa():
    cm = np.array([[5, 1], [2, 4]])
    s = metrics.summarize(cm, ["a", "b"])
    assert s["micro_f1"] == s["wa"] == pytest.approx(9 / 12)


def test_bad_indices_rejected():
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="references"):
        metrics.confusion_matrix([0, 1], [0], 3)


def test_criterion_counts_reproduce_the_matrix():
    # the criterion logs counts per batch; their sum over batches must be the set's matrix
    torch = pytest.importorskip("torch")
    from fairseq_ser.criterions.ser_cross_entropy import confusion_counts, matrix_from_counts

    refs = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0])
    preds = torch.tensor([0, 1, 1, 2, 0, 2, 1, 0])
    total = {}
    for lo, hi in ((0, 3), (3, 8)):
        for k, v in confusion_counts(refs[lo:hi], preds[lo:hi], 3).items():
            total[k] = total.get(k, 0) + v
    assert (matrix_from_counts(total) == metrics.confusion_matrix(refs, preds, 3)).all()

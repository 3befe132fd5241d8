"""min_padding batching: the cuts are optimal, cover every utterance once, keep the batch count, respect the cap."""

import math

import numpy as np
import pytest
import torch

from fairseq_ser.data.batching import min_padding_batches
from builders import make_task


def brute_force(lengths, num, cap):
    """Smallest total padded size of ``num`` contiguous batches of the descending lengths (O(num n^2))."""
    s = np.sort(np.asarray(lengths, dtype=np.float64))[::-1]
    best = np.full(len(s) + 1, np.inf)
    best[0] = 0
    for _ in range(num):
        nxt = np.full(len(s) + 1, np.inf)
        for j in range(1, len(s) + 1):
            i = np.arange(j)
            cost = (j - i) * s[i]
            nxt[j] = (best[:j] + np.where((cost > cap) & (j - i > 1), np.inf, cost)).min()
        best = nxt
    return best[-1]


@pytest.mark.parametrize("seed", range(12))
def test_min_padding_is_the_optimal_cut(seed):
    rng = np.random.default_rng(seed)
    n, batch_size = int(rng.integers(20, 120)), int(rng.integers(2, 20))
    lengths = rng.integers(400, 5000, n)
    if seed % 2:  # a crop plateau: many utterances of exactly the longest length
        lengths = np.minimum(lengths, 3000)
    cap = None if seed % 3 else float(rng.integers(5000, 40000))
    batches = min_padding_batches(rng.permutation(n), lengths, batch_size, cap)
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    limit = cap if cap is not None else batch_size * lengths.max()
    assert all(len(b) == 1 or len(b) * lengths[b].max() <= limit for b in batches)
    if cap is None:
        assert len(batches) == math.ceil(n / batch_size)  # the same updates per epoch as runs of batch_size
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded == brute_force(lengths, len(batches), limit)


def test_task_batches_with_min_padding(synth_folds):
    task = make_task(synth_folds / "fold1", max_sample_size=16000)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batches = list(task.get_batch_iterator(dataset=dataset, max_sentences=4, seed=1, num_workers=0,
                                           epoch=1).frozen_batches)
    fixed_task = make_task(synth_folds / "fold1", max_sample_size=16000, batching="fixed")
    fixed_task.load_dataset("train")
    fixed = list(fixed_task.get_batch_iterator(dataset=fixed_task.dataset("train"), max_sentences=4, seed=1,
                                               num_workers=0, epoch=1).frozen_batches)
    cropped = np.minimum(dataset.sizes, 16000)

    def padded(bs):
        return sum(len(b) * cropped[b].max() for b in bs)

    assert len(batches) == len(fixed) == math.ceil(len(dataset) / 4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(dataset)))
    assert padded(batches) <= padded(fixed)


def batches_of(task, epoch, batch_size=4):
    dataset = task.dataset("train")
    itr = task.get_batch_iterator(dataset=dataset, max_sentences=batch_size, seed=1, num_workers=0, epoch=epoch)
    return [sorted(b.tolist()) for b in itr.frozen_batches]


def test_random_batching_draws_new_full_batches_each_epoch(synth_folds):
    """task.batching=random: the reference's shuffled batches of batch_size, drop_last, new each epoch."""
    task = make_task(synth_folds / "fold1", max_sample_size=16000, batching="random")
    task.load_dataset("train")
    n = len(task.dataset("train"))
    first, second = batches_of(task, 1), batches_of(task, 2)
    for batches in (first, second):
        assert all(len(b) == 4 for b in batches) and len(batches) == n // 4
        flat = np.concatenate(batches)
        assert len(set(flat.tolist())) == len(flat) == 4 * (n // 4)
    assert first != second, "random batches are drawn anew every epoch"
    assert first == batches_of(task, 1), "and reproducibly for a given seed and epoch"
    # lengths are not sorted within random batches (unlike min_padding's)
    sizes = np.asarray(task.dataset("train").sizes)
    assert any(np.ptp(sizes[b]) > 0.3 * sizes[b].max() for b in first)
    # evaluation splits are never dropped or reshuffled
    task.load_dataset("valid")
    assert task.dataset("valid").dataset.batching == "min_padding"


def test_crop_start_keeps_the_first_samples_and_batch_shortest_has_no_padding(synth_folds):
    task = make_task(synth_folds / "fold1", max_sample_size=8000, crop="start")
    task.load_dataset("train")
    dataset = task.dataset("train")
    long = next(i for i in range(len(dataset)) if dataset.sizes[i] > 8000)
    item = dataset[long]
    batch = dataset.collater([item])
    assert batch["net_input"]["source"].shape[-1] == 8000
    assert torch.equal(batch["net_input"]["source"][0], item["source"][:8000])

    task = make_task(synth_folds / "fold1", max_sample_size=160000, crop="batch_shortest")
    task.load_dataset("train")
    dataset = task.dataset("train")
    items = [dataset[i] for i in range(4)]
    batch = dataset.collater(items)
    assert batch["net_input"].get("padding_mask") is None
    assert batch["net_input"]["source"].shape[-1] == min(len(s["source"]) for s in items)
    task.load_dataset("valid")  # evaluation utterances stay whole and padded
    valid = task.dataset("valid")
    assert "padding_mask" in valid.collater([valid[0], valid[1]])["net_input"]

"""V-FT time masking: the fraction of each utterance's frames that is masked, by utterance length.

Measures three rules on the same utterance lengths (1, 2, 4 and 8 s, and
the whole IEMOCAP-like distribution) with ``mask_prob`` 0.08 and spans of 15
frames:

- ``reference``: the paper's code as it runs (read from b04901014/FT-w2v2-ser
  and transformers 4.10's ``_compute_mask_indices``): a random batch of 64
  utterances is cropped to 10 s and padded to its longest, one span count
  ``max(2, int(0.08 * T / 15 + U))`` is drawn for the batch from the padded
  frame count ``T``, every row gets that many distinct span starts over
  ``T - 14`` positions, and the mask is intersected with the row's valid
  frames. Each utterance to measure is put in such a batch with 63 others
  drawn from the IEMOCAP-like distribution;
- ``min_spans`` (this package's V-FT rule before, ``model.mask_rule=min_spans``):
  per utterance, ``0.08 * n / 15`` spans inside it, at least 2;
- ``fraction`` (the default now, ``model.mask_rule=fraction``): per utterance,
  spans whose starts are uniform over the positions touching it, so that
  every frame is masked with probability about 0.08 whatever the length.

Prints the mean masked fraction per length and rule (``--draws`` masks
each) and a SUMMARY line with the largest gap between ``fraction`` and the
reference over the lengths.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench_batching import iemocap_like_lengths  # noqa: E402
from common import print_summary, print_table  # noqa: E402

PROB, SPAN = 0.08, 15
CROP_FRAMES = 499  # 10 s at 16 kHz through wav2vec 2.0's CNN
SECONDS = (1, 2, 4, 8)


def frames(seconds):
    from fairseq_ser.frames import num_frames

    return num_frames(int(round(seconds * 16000)))


def reference_fraction(n, rng, draws, pool):
    """Mean masked fraction of an ``n``-frame utterance under the reference's batch-level rule."""
    total = 0.0
    for _ in range(draws):
        others = rng.choice(pool, 63)
        padded = max(n, int(others.max()))
        num = max(2, int(PROB * padded / SPAN + rng.random()))
        num = min(num, padded // SPAN)
        starts = rng.choice(padded - SPAN + 1, num, replace=False)
        row = np.zeros(padded, dtype=bool)
        for s in starts:
            row[s:s + SPAN] = True
        total += row[:n].mean()
    return total / draws


def package_fraction(n, rule, rng, draws):
    from fairseq_ser.models.masked_encoder import span_mask

    mask = span_mask([n] * draws, n, PROB, SPAN, 2, rng, rule=rule)
    return float(mask.float().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=4000, help="masks drawn per length and rule (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="400 draws per length")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    draws = 400 if args.quick else args.draws
    rng = np.random.default_rng(args.seed)
    pool = np.array([min(frames(s), CROP_FRAMES) for s in iemocap_like_lengths(5000, args.seed)])

    rows, gaps = [], []
    for seconds in SECONDS:
        n = frames(seconds)
        ref = reference_fraction(n, rng, draws, pool)
        old = package_fraction(n, "min_spans", rng, draws)
        new = package_fraction(n, "fraction", rng, draws)
        gaps.append(abs(new - ref))
        rows.append([f"{seconds} s ({n} frames)", f"{100 * ref:.1f} %", f"{100 * old:.1f} %", f"{100 * new:.1f} %"])
    sample = rng.choice(pool, 300)
    ref = np.mean([reference_fraction(int(n), rng, max(1, draws // 100), pool) for n in sample])
    old = np.mean([package_fraction(int(n), "min_spans", rng, max(1, draws // 100)) for n in sample])
    new = np.mean([package_fraction(int(n), "fraction", rng, max(1, draws // 100)) for n in sample])
    rows.append(["IEMOCAP-like mix", f"{100 * ref:.1f} %", f"{100 * old:.1f} %", f"{100 * new:.1f} %"])
    print_table(f"V-FT time masking (mask_prob {PROB}, span {SPAN}): mean masked fraction of an utterance, "
                f"{draws} draws per length",
                ["length", "reference (batch of 64)", "min_spans (before)", "fraction (now)"], rows)
    print_summary("masking", {"max_gap_vs_reference_pct": round(100 * max(gaps), 2)})


if __name__ == "__main__":
    main()

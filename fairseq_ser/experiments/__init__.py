"""Experiments over folds: the stage commands of each method, the cross-validation loop, the tables.

- :mod:`.overrides`: Hydra overrides for every training stage or for one (``vft:key=value``).
- :mod:`.stages`: one stage = one command (``fairseq-hydra-train`` or ``fairseq-ser``) run in
  its own folder with its log, and a completion marker written after it succeeded.
- :mod:`.cv`: V-FT, TAPT and P-TAPT on every fold (found by :mod:`fairseq_ser.data.fold_dirs`),
  fine-tuning repeated with different seeds, each run scored by :mod:`fairseq_ser.evaluation`;
  optionally at several labelled fractions and with extra unlabelled audio; resumable.
- :mod:`.report`: per-fold mean and standard deviation over runs, averages, summed confusion
  matrices, the train x test corpus table; Markdown and JSON.
- :mod:`.low_resource`: the fractions side by side, and the curve of UA against the fraction.
- :mod:`.cross_corpus`: scoring a run's checkpoint on all of another corpus (``--also-test``).

Progress is reported through a ``report`` callback (one line per call; the logger by
default), which the command-line front ends set to print.
"""

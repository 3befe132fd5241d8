"""Experiments over folds: the stage commands of each method, the cross-validation loop, the tables.

- :mod:`.overrides`: Hydra overrides for every training stage or for one (``vft:key=value``).
- :mod:`.stages`: one stage = one command (``fairseq-hydra-train`` or ``fairseq-ser``) run in
  its own folder with its log, and a completion marker written after it succeeded.
- :mod:`.fold_dirs`: finding and checking the fold folders of a manifest root on disk.
- :mod:`.cv`: V-FT, TAPT and P-TAPT on every fold, fine-tuning repeated with different seeds,
  each run scored by :mod:`fairseq_ser.evaluation`; resumable.
- :mod:`.report`: per-fold mean and standard deviation over runs, averages, summed confusion
  matrices; Markdown and JSON.

Progress is reported through a ``report`` callback (one line per call; the logger by
default), which the command-line front ends set to print.
"""

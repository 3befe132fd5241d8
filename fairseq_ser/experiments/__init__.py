"""Experiments over folds: the stage commands of each method, the cross-validation loop, the tables.

- :mod:`.overrides`: Hydra overrides for every training stage or for one (``vft:key=value``).
- :mod:`.stages`: one stage = one command (``fairseq-hydra-train`` or ``fairseq-ser``) run in
  its own folder with its log, and a completion marker written after it succeeded.
- :mod:`.folds`: finding and checking the fold folders of a manifest root.
- :mod:`.cv`: V-FT, TAPT and P-TAPT on every fold, fine-tuning repeated with different seeds;
  resumable.
- :mod:`.report`: per-fold mean and standard deviation over runs, averages, summed confusion
  matrices; Markdown and JSON.
"""

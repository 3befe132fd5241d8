"""Pseudo-labels for P-TAPT: frame features of a checkpoint, FAISS k-means at several K, label files.

``fairseq-ser pseudo-labels run DATA_DIR LABEL_DIR --checkpoint CKPT`` runs the
whole step on one machine. On many machines, run its steps one after the other:
``dump`` (sharded with --nshard/--rank), ``kmeans`` (once), ``assign`` (sharded;
the last shard to finish writes the split's label files). Every step can be
rerun after an interruption: finished shards and K are not computed again.

Writes, in LABEL_DIR: {split}.km{K} (one line per manifest line, one cluster id
per wav2vec 2.0 frame, HuBERT's format), dict.km{K}.txt, km{K}.centroids.npy,
km{K}.json, labels.json, and the intermediate features/ and parts/ folders.
"""

import os

STEPS = ("run", "dump", "kmeans", "assign")
# --device, spelled as in the other commands -> what the clustering functions take
DEVICES = ("auto", "cpu", "cuda")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="step", metavar="STEP")
    sub.required = True
    helps = {"run": "the whole step: dump, k-means, assign",
             "dump": "dump frame features of manifest splits (sharded)",
             "kmeans": "learn k-means for several K on a sample of dumped frames",
             "assign": "label every frame with its nearest centroid (sharded) and write {split}.km{K}"}
    for step in STEPS:
        p = sub.add_parser(step, help=helps[step], description=helps[step])
        if step != "kmeans":
            p.add_argument("data", metavar="DATA_DIR", help="manifest folder with {split}.tsv")
        p.add_argument("label_dir", metavar="LABEL_DIR", help="output folder of the pseudo-labels")
        if step in ("run", "dump"):
            p.add_argument("--checkpoint", required=True, metavar="CKPT",
                           help="P-TAPT stage-1 frame emotion model, or any wav2vec 2.0 checkpoint (with --layer)")
            p.add_argument("--layer", type=int, metavar="L",
                           help="for a wav2vec 2.0 checkpoint: cluster the output of Transformer layer L "
                           "(1-based; 0 = projected CNN features)")
            p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                           help="storage type of the dumped features (default: %(default)s)")
        if step != "kmeans":
            p.add_argument("--splits", nargs="+", metavar="SPLIT",
                           help="splits to process (default: every {split}.tsv in DATA_DIR)")
        if step in ("run", "kmeans"):
            p.add_argument("--kmeans-splits" if step == "run" else "--splits", dest="kmeans_splits",
                           nargs="+", default=["train"], metavar="SPLIT",
                           help="splits whose frames k-means is learned on (default: %(default)s)")
            p.add_argument("--sample-fraction", type=float, default=1.0,
                           help="fraction of their frames sampled for k-means (default: %(default)s)")
            p.add_argument("--max-sample-frames", type=int, default=1_000_000,
                           help="at most this many sampled frames for any K, held in memory as float32 "
                           "while it is learned (default: %(default)s)")
            p.add_argument("--max-points-per-centroid", type=int, default=256,
                           help="at most this many sampled frames per centroid of each K, unless "
                           "--min-sample-frames allows more (default: %(default)s, FAISS's own limit)")
            p.add_argument("--min-sample-frames", type=int, default=65536,
                           help="every K may sample this many frames even beyond --max-points-per-centroid: "
                           "small K gain from it at little cost (default: %(default)s)")
            p.add_argument("--niter", type=int, default=20, help="k-means iterations (default: %(default)s)")
            p.add_argument("--seed", type=int, default=1, help="seed of sampling and k-means (default: %(default)s)")
        p.add_argument("--ks", type=int, nargs="+", metavar="K",
                       default=[64, 512, 4096] if step in ("run", "kmeans") else None,
                       help="numbers of clusters (default: " + ("64 512 4096)" if step in ("run", "kmeans")
                                                                 else "every K learned in LABEL_DIR)"))
        p.add_argument("--nshard", type=int, default=1,
                       help="number of feature shards; the same in every step (default: %(default)s)")
        if step in ("dump", "assign"):
            p.add_argument("--rank", type=int, metavar="R",
                           help="process only shard R (0-based; default: every shard)")
        if step in ("run", "assign"):
            p.add_argument("--chunk-frames", type=int, default=16384,
                           help="frames read and labelled at a time (default: %(default)s)")
        if step in ("run", "kmeans", "assign"):
            p.add_argument("--device", choices=DEVICES, default="auto",
                           help="where FAISS runs: cuda = every GPU FAISS sees, auto = those GPUs if "
                           "there are any, else the CPU (default: %(default)s)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _splits(args):
    from ..errors import DataError

    if args.splits:
        return args.splits
    names = sorted(n[:-4] for n in os.listdir(args.data) if n.endswith(".tsv")) if os.path.isdir(args.data) else []
    if not names:
        raise DataError(f"{args.data}: no {{split}}.tsv manifests in this folder")
    return names


def _ranks(args):
    return None if getattr(args, "rank", None) is None else [args.rank]


def run(args):
    import logging

    from ..clustering.assign import assign_split
    from ..clustering.dump import dump_split
    from ..clustering.kmeans import learn_kmeans, learned_ks, use_gpu

    progress = not args.no_progress
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
    if args.step in ("run", "dump"):
        from ..clustering.features import load_extractor

        extractor = load_extractor(args.checkpoint, args.layer)
        splits = _splits(args)
        if args.step == "run":  # the k-means splits first, then the others
            splits = list(dict.fromkeys(list(args.kmeans_splits) + splits))
        for split in splits:
            dump_split(extractor, args.data, split, args.label_dir, args.nshard, _ranks(args), args.dtype, progress)
    if args.step in ("run", "kmeans"):
        learn_kmeans(args.label_dir, args.kmeans_splits, args.ks, args.nshard, args.sample_fraction,
                     args.max_sample_frames, args.niter, args.seed, args.device,
                     verbose=args.verbose, max_points_per_centroid=args.max_points_per_centroid,
                     min_sample_frames=args.min_sample_frames)
    if args.step in ("run", "assign"):
        ks = args.ks or learned_ks(args.label_dir)
        if not ks:
            from ..errors import DataError

            raise DataError(f"{args.label_dir}: no k-means learned here; run `fairseq-ser pseudo-labels kmeans`")
        gpu = use_gpu(args.device)
        splits = _splits(args) if args.step == "assign" else list(dict.fromkeys(list(args.kmeans_splits) + _splits(args)))
        for split in splits:
            assign_split(args.label_dir, args.data, split, ks, args.nshard, _ranks(args), args.chunk_frames,
                         gpu, progress)
    logging.getLogger(__name__).info("pseudo-labels %s: done (%s)", args.step, args.label_dir)

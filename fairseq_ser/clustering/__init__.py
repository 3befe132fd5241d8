"""Pseudo-labels for P-TAPT: frame features dumped shard by shard, FAISS k-means, HuBERT-style label files.

``features`` (what is clustered), ``dump`` (features to disk), ``kmeans``
(centroids for several K), ``assign`` (``{split}.km{K}`` label files).
"""

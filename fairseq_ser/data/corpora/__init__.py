"""Corpus readers: each lists a corpus's utterances, labels and speakers, and
defines its folds; :mod:`fairseq_ser.data.prepare` does the rest.

- :mod:`.iemocap`: IEMOCAP, leave-one-session-out.
- :mod:`.emodb`: the Berlin Database of Emotional Speech, leave-one-speaker-out.
- :mod:`.custom`: users' own data, from a folder tree or from JSON split files.
"""

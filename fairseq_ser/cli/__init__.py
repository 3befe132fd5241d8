"""Command-line front ends; each module adds one ``fairseq-ser`` subcommand."""

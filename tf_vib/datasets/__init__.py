"""Data sets for tf-vib's examples, tests and benchmarks; nothing here downloads."""

from tf_vib.datasets.sequences import (
    SequenceDataset,
    digits_rows,
    stratified_split,
    uea,
    uea_names,
)

__all__ = ["SequenceDataset", "digits_rows", "stratified_split", "uea", "uea_names"]

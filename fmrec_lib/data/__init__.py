"""Data pipeline: readers, leave-one-out build, named datasets. Entry point: :func:`load_dataset`."""
from .dataset import (MIN_SEQUENCE_LENGTH, SequentialDataset, build_dataset, dataset_from_split,
                      drop_duplicate_interactions, k_core, pad_left, sequences_from_interactions)
from .readers import (DataFormatError, Interaction, read_csv_interactions, read_dat_interactions, read_interactions,
                      read_sequences, read_split_pickle, read_steam_reviews, read_tsv_interactions)
from .registry import (DATA_DIR_ENV, DATASETS, FORMATS, GENERIC_STEMS, SUFFIX_FORMATS, DatasetNotFoundError,
                       DatasetSpec, dataset_label, file_dataset_name, format_of, load_dataset, load_reference_split, locate,
                       project_data_dir)

__all__ = [
    "DATA_DIR_ENV", "DATASETS", "FORMATS", "GENERIC_STEMS", "SUFFIX_FORMATS", "DataFormatError",
    "DatasetNotFoundError", "DatasetSpec", "Interaction", "dataset_label", "MIN_SEQUENCE_LENGTH", "SequentialDataset",
    "build_dataset", "dataset_from_split", "drop_duplicate_interactions", "file_dataset_name", "format_of",
    "k_core", "load_dataset", "load_reference_split", "locate", "pad_left", "project_data_dir",
    "read_csv_interactions", "read_dat_interactions", "read_interactions", "read_sequences", "read_split_pickle",
    "read_steam_reviews", "read_tsv_interactions", "sequences_from_interactions",
]

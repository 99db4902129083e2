"""Data pipeline: readers, leave-one-out build, named datasets. Entry point: :func:`load_dataset`."""
from .dataset import (MIN_SEQUENCE_LENGTH, SequentialDataset, build_dataset, dataset_from_split, k_core, pad_left,
                      sequences_from_interactions)
from .readers import (DataFormatError, Interaction, read_csv_interactions, read_interactions, read_sequences,
                      read_split_pickle, read_steam_reviews)
from .registry import (DATA_DIR_ENV, DATASETS, DatasetNotFoundError, DatasetSpec, load_dataset,
                       load_reference_split, locate, project_data_dir)

__all__ = [
    "DATA_DIR_ENV", "DATASETS", "DataFormatError", "DatasetNotFoundError", "DatasetSpec", "Interaction",
    "MIN_SEQUENCE_LENGTH", "SequentialDataset", "build_dataset", "dataset_from_split", "k_core", "load_dataset",
    "load_reference_split", "locate", "pad_left", "project_data_dir", "read_csv_interactions", "read_interactions",
    "read_sequences", "read_split_pickle", "read_steam_reviews", "sequences_from_interactions",
]

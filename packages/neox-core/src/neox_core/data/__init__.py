"""GPT-NeoX's dataset sampling over neox-data `.bin/.idx` files."""

from neox_core.data.build import Datasets, build_datasets
from neox_core.data.gpt_dataset import BlendedDataset, GPTDataset
from neox_core.data.index_cache import load_or_build_index
from neox_core.data.loader import ResumableBatchSampler, make_loader
from neox_core.data.splits import num_samples_per_split, split_boundaries

__all__ = [
    "BlendedDataset",
    "Datasets",
    "GPTDataset",
    "ResumableBatchSampler",
    "build_datasets",
    "load_or_build_index",
    "make_loader",
    "num_samples_per_split",
    "split_boundaries",
]

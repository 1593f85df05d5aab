"""Datasets: ``get_dataset(name, **params)`` and ``list_datasets()``.

Importing this package registers every built-in dataset (embedded generators and real-data
readers).
"""

from spectral_ray.data.registry import ImageDataset, dataset_info, get_dataset, list_datasets, register_dataset

__all__ = ["ImageDataset", "get_dataset", "list_datasets", "dataset_info", "register_dataset"]

# Registration happens on import.
from spectral_ray.data import medical, natural, real, targets  # noqa: E402,F401

"""Datasets: ``get_dataset(name, **params)`` and ``list_datasets()``.

Importing this package registers every built-in dataset: each module of this package (and of
its sub-packages, e.g. ``real``) whose source calls ``register_dataset(`` is imported, so a new
dataset is one new module (docs/ARCHITECTURE.md).
"""

import pkgutil
from importlib import import_module
from pathlib import Path

from spectral_ray.data.dataset import ImageDataset
from spectral_ray.data.registry import (code_version, dataset_info, get_dataset, list_datasets, missing_paths,
                                        register_dataset)

__all__ = ["ImageDataset", "get_dataset", "list_datasets", "dataset_info", "register_dataset", "code_version",
           "missing_paths"]


def _register_builtin() -> None:
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        leaf = info.name.rpartition(".")[2]
        if info.ispkg or leaf.startswith("_"):
            continue
        path = Path(info.module_finder.path) / f"{leaf}.py"
        if path.is_file() and "register_dataset(" in path.read_text(encoding="utf-8"):
            import_module(info.name)


_register_builtin()

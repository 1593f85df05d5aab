"""Real-data readers: ImageNet/RadImageNet class folders, LoDoPaB-CT, KneeMRI and generic CSV targets.

Every reader takes the paths a user writes into a sweep file and returns an
:class:`~spectral_ray.data.dataset.ImageDataset` (float32 ``(n, C, size, size)`` in [0, 1], int64
labels, class names, int64 patient ``groups`` for targets), so real data go through the same
degradation protocol and folds as the embedded datasets. One module per reader (``folders``,
``lodopab``, ``kneemri``, ``csv_target``), ``streaming`` for sources too large for memory
(:class:`FolderImageDataset` with :func:`make_loader`), ``common`` for what they share. The
on-disk layouts, CSV formats and parameters are documented in ``docs/REAL_DATA.md``.

The real-mini datasets (``photos``: ``natural_real``, ``ct_head``: ``medical_real``,
``mri_atlas``) read the real files ``scripts/real-mini-data.sh`` puts in the data cache, through
``minidata`` (InVesalius and NIfTI readers, intensity rules); docs/DATA.md, "Real pixels".

Untrusted inputs: KneeMRI pickles load only through :mod:`spectral_ray.safe_pickle`; ``.npz``/
``.npy`` files load with ``allow_pickle=False``.
"""

from spectral_ray.data.real.common import IMAGE_EXTENSIONS, MAX_MEMORY_MB, load_image
from spectral_ray.data.real.csv_target import csv_target
from spectral_ray.data.real.folders import image_folder, imagenet_folder, radimagenet_folder
from spectral_ray.data.real.kneemri import knee_mri
from spectral_ray.data.real.lodopab import LODOPAB_SLICES_PER_FILE, lodopab_ct
from spectral_ray.data.real.streaming import FolderImageDataset, FolderIndex, make_loader, scan_image_folder

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_MEMORY_MB",
    "LODOPAB_SLICES_PER_FILE",
    "FolderIndex",
    "FolderImageDataset",
    "scan_image_folder",
    "make_loader",
    "load_image",
    "image_folder",
    "imagenet_folder",
    "radimagenet_folder",
    "lodopab_ct",
    "knee_mri",
    "csv_target",
]

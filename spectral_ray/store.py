"""Pretrain-once backbone store, content-addressed by the pretraining config.

A pretrained backbone is identified by :meth:`PretrainConfig.key` — the sha256 of the config's
canonical JSON (source dataset and its parameters, edit, architecture, recipe, seed, code
version). :func:`get_or_train` returns its checkpoint path, training it first when absent:

* training happens under an inter-process ``filelock.FileLock`` per key, so concurrent callers
  (Ray trials on one machine or on nodes sharing the store's filesystem) wait and then reuse;
* the checkpoint is written atomically with a sha256 inside (:func:`spectral_ray.models.save_backbone`),
  then ``meta.json`` — the done marker — atomically after it; an entry without a valid
  ``meta.json`` or whose checkpoint fails its checksum is deleted and rebuilt;
* every training appends a line to ``trainings.jsonl`` at the root, so :func:`stats` can show
  that each config was pretrained once;
* ``meta.json`` records the provenance (a hash of each module that pretrains, the torch/timm/numpy
  versions); a hit trained by other code or another major.minor of those libraries raises
  :class:`StaleBackbone` naming the difference, instead of being reused silently (entries from
  before the record pass, as their key's ``STORE_VERSION`` always did).

Arrays kept beside a backbone (the probe priority) go through :func:`save_array_checked` /
:func:`load_array_checked`: a ``.sha256`` beside each, a damaged one is recomputed by its caller.

Layout: ``<root>/<key[:24]>/{backbone.pt, meta.json, .lock}`` and ``<root>/trainings.jsonl``.
The root is ``root=`` or ``$SPECTRAL_RAY_STORE`` or ``~/.cache/spectral-ray/backbones``
(``$XDG_CACHE_HOME`` honoured). On a cluster point it at a shared filesystem whose locks work
across nodes (``flock``; most NFSv4 and Lustre mounts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from spectral_ray.atomic import atomic_open, read_json_dict
from spectral_ray.models import CorruptCheckpoint, read_backbone, save_backbone
from spectral_ray.paths import cache_path
from spectral_ray.training import Recipe, from_fields

__all__ = [
    "PretrainConfig",
    "get_or_train",
    "default_pretrain",
    "store_root",
    "entry_dir",
    "load_meta",
    "stats",
    "STORE_VERSION",
    "ENV_VAR",
    "StaleBackbone",
    "training_provenance",
    "save_array_checked",
    "load_array_checked",
]

STORE_VERSION = "1"  # bump when pretraining itself changes (default_pretrain, fit) so old backbones are not reused
# Bump when the input preprocessing of published weights changes (models.set_input_normalization):
# only backbones started from published weights carry one. 1: mean/std normalisation inside the model.
PREPROCESSING_VERSION = "1"
ENV_VAR = "SPECTRAL_RAY_STORE"
CHECKPOINT = "backbone.pt"
META = "meta.json"
LOG = "trainings.jsonl"
# A stored backbone records the code that trained it and the libraries it ran on (meta.json's
# "provenance"); one trained by other code is refused, not silently reused (:func:`get_or_train`).
REUSE_ENV = "SPECTRAL_RAY_STORE_REUSE"
PROVENANCE_MODULES = ("spectral_ray.store", "spectral_ray.spectrum", "spectral_ray.weights")
PROVENANCE_LIBRARIES = ("torch", "timm", "numpy")

# Recipe fields that do not change what is learned (only speed/memory); left out of the key.
_RECIPE_KEY_EXCLUDE = ("num_threads", "eval_batch_size", "eval_sets_every")
# Recipe fields added after the first backbones were stored: hashed only when set to something
# other than their default (the default is the behaviour from before they existed), so those
# backbones keep their keys.
_RECIPE_KEY_IF_SET = ("adam_eps", "affine_rotation_deg", "affine_shift", "affine_shear_deg", "affine_zoom",
                      "head_dropout", "small_map_conv_pixels")


def _code_version(source: str, edited: bool, init: str | None) -> str:
    """What code made the backbone: the store version, the source's generator code (registry),
    and for published-weights starts the version of their input preprocessing."""
    # Imported here, not at module level: spectral_ray.data registers (imports) every dataset
    # generator, which worker processes that only look up the store do not need.
    from spectral_ray.data.registry import code_version

    data = code_version(source, edited=edited) if source != "none" else "none"
    prep = f"-prep{PREPROCESSING_VERSION}" if init is not None else ""
    return f"store{STORE_VERSION}{prep}-data{data}"


def _canonical(obj):
    """JSON-ready canonical form: integral floats become ints (so 0 and 0.0 hash alike), numpy
    scalars/arrays become Python, tuples become lists, dict keys strings."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _canonical(obj.tolist())
    if isinstance(obj, np.generic):
        return _canonical(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj) and obj.is_integer():
            return int(obj)
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-able in a pretraining config: {obj!r} ({type(obj).__name__})")


@dataclass
class PretrainConfig:
    """Everything that determines a pretrained backbone (JSON-able; see :meth:`key`).

    ``source_params`` are passed to ``get_dataset(source, **source_params)`` — give them
    explicitly (size, channels, n, seed): the key hashes what is written, not the dataset's
    defaults. An edit with ``edit_family == "none"`` or ``edit_strength == 0`` is the unedited
    source (strength 0 is the identity), so all of those share one key.
    """

    source: str
    source_params: dict = field(default_factory=dict)
    edit_family: str = "none"
    edit_strength: float = 0.0
    edit_params: dict = field(default_factory=dict)
    model: str = "resnet18"
    model_kwargs: dict = field(default_factory=dict)
    init: str | None = None  # published weights to start from (spectral_ray.weights spec), None = random
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    val_fraction: float = 0.1
    code_version: str = ""  # filled in from the store version and the source's generator code

    def __post_init__(self):
        self.recipe = Recipe.from_dict(self.recipe)
        if not self.code_version:
            self.code_version = _code_version(self.source, self.edited, self.init)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    @property
    def edited(self) -> bool:
        from spectral_ray.editing import is_edit

        return is_edit(self.edit_family, self.edit_strength)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        """A PretrainConfig from :meth:`to_dict`'s form (unknown keys raise ``TypeError`` naming them)."""
        return from_fields(cls, d, "pretraining config")

    def canonical(self) -> dict:
        """The hashed form: canonical numbers, speed-only recipe knobs dropped, a no-op edit
        written as ``none``."""
        d = self.to_dict()
        for k in _RECIPE_KEY_EXCLUDE:
            d["recipe"].pop(k, None)
        defaults = Recipe()
        for k in _RECIPE_KEY_IF_SET:
            if d["recipe"][k] == getattr(defaults, k):
                del d["recipe"][k]
        if not self.edited:
            d["edit_family"], d["edit_strength"], d["edit_params"] = "none", 0, {}
        return _canonical(d)

    def key(self) -> str:
        """sha256 (hex) of the canonical JSON (sorted keys, no whitespace)."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------ provenance


class StaleBackbone(RuntimeError):
    """A stored backbone was pretrained by other code or library versions than this run's."""


@lru_cache(maxsize=1)
def training_provenance() -> dict:
    """``{"code": {module: sha256[:12]}, "libraries": {name: version}}``: the project modules that
    pretrain a backbone (:data:`PROVENANCE_MODULES` and what they import at module level) and the
    versions of :data:`PROVENANCE_LIBRARIES`."""
    from importlib import metadata

    from spectral_ray.data.codeversion import module_closure

    code = {}
    for module in PROVENANCE_MODULES:
        for name, path in module_closure(module):
            code[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    libraries = {}
    for name in PROVENANCE_LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    return {"code": code, "libraries": libraries}


def _minor(version: str | None) -> str | None:
    return ".".join(version.split("+")[0].split(".")[:2]) if version else None


def provenance_mismatch(meta: dict) -> str | None:
    """What differs between the code/libraries that trained a stored backbone (its meta.json) and
    this process's, or None. Libraries count at major.minor (a patch release is the same
    training); entries stored before provenance was recorded carry none and pass (their key has
    :data:`STORE_VERSION`, as before)."""
    before = meta.get("provenance")
    if not isinstance(before, dict):
        return None
    now = training_provenance()
    old_code, new_code = before.get("code") or {}, now["code"]
    changed = sorted(k for k in set(old_code) | set(new_code) if old_code.get(k) != new_code.get(k))
    old_libs = before.get("libraries") or {}
    libs = [f"{n} {old_libs.get(n)} (now {v})" for n, v in now["libraries"].items()
            if n in old_libs and _minor(old_libs.get(n)) != _minor(v)]
    parts = ([f"code changed in {', '.join(changed)}"] if changed else []) + (
        [f"libraries {', '.join(libs)}"] if libs else [])
    return "; ".join(parts) or None


def _check_provenance(d: Path) -> None:
    meta = read_json_dict(d / META) or {}
    why = provenance_mismatch(meta)
    if why is None or os.environ.get(REUSE_ENV) == "1":
        return
    raise StaleBackbone(
        f"the stored backbone {d} was pretrained by other code than this run's ({why}). If the change "
        f"alters pretraining, delete that folder (it is retrained on the next run) or bump STORE_VERSION in "
        f"spectral_ray/store.py; if it does not (a refactor, a comment), reuse it with {REUSE_ENV}=1, or point "
        f"the sweep at another store (params.store / SPECTRAL_RAY_STORE).")


# ----------------------------------------------------------------------------------- paths


def store_root(root=None) -> Path:
    """``root``, else ``$SPECTRAL_RAY_STORE``, else ``<cache root>/backbones`` (spectral_ray.paths)."""
    if root is not None:
        return Path(root).expanduser()
    return cache_path(ENV_VAR, "backbones")


def entry_dir(config: PretrainConfig, root=None) -> Path:
    return store_root(root) / config.key()[:24]


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def load_meta(path) -> dict:
    """The ``meta.json`` of an entry, given its checkpoint path or its directory."""
    path = Path(path)
    d = path if path.is_dir() else path.parent
    meta = read_json_dict(d / META)
    if meta is None:
        raise FileNotFoundError(f"no valid {META} in {d}")
    return meta


def _valid(d: Path, key: str, verify: bool) -> bool:
    meta = read_json_dict(d / META)
    if meta is None or meta.get("key") != key or not (d / CHECKPOINT).is_file():
        return False
    if verify:
        try:
            _, ck_meta = read_backbone(d / CHECKPOINT)
        except (CorruptCheckpoint, FileNotFoundError):
            return False
        if ck_meta.get("key") != key:
            return False
    return True


def _log_lines(root: Path) -> list[dict]:
    out = []
    try:
        with open(root / LOG) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn line from a crash
    except OSError:
        pass
    return out


def _jsonable(obj):
    """Best-effort JSON conversion for histories (NaN → None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# ------------------------------------------------------------------- checksummed arrays


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_array_checked(path, array: np.ndarray) -> None:
    """``path`` (.npy) and ``path.sha256`` beside it (the sha256 of the .npy bytes), each written
    atomically, the array first."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    data = buf.getvalue()
    with atomic_open(path) as f:
        f.write(data)
    _atomic_write_text(_checksum_path(path), hashlib.sha256(data).hexdigest() + "\n")


def load_array_checked(path) -> np.ndarray | None:
    """The array saved by :func:`save_array_checked`, or None when it is absent, has no checksum
    (written before checksums, or by a writer that crashed between the two files) or fails it
    (a damaged file: both are removed, so the caller recomputes and saves it again)."""
    import io

    path = Path(path)
    try:
        data = path.read_bytes()
        expected = _checksum_path(path).read_text().strip()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() == expected:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError:
            pass
    for p in (path, _checksum_path(path)):
        p.unlink(missing_ok=True)
    return None


# ------------------------------------------------------------------------------ get/train


def get_or_train(
    config: PretrainConfig | dict,
    *,
    root=None,
    train_fn: Callable | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    verify: bool = True,
    lock_timeout: float = -1,
) -> Path:
    """Path of the pretrained backbone for ``config``, training it first if the store lacks it.

    ``train_fn(config) -> (model, history)`` (default :func:`default_pretrain`) runs at most once
    per key across processes: callers serialise on a per-key file lock and reuse the result.
    ``on_epoch`` is passed to ``train_fn`` (as ``on_epoch=``) only when this call trains.
    ``verify`` re-checks the checkpoint's sha256 on a hit (a corrupt or partial entry is
    rebuilt). ``lock_timeout`` seconds (−1 = wait forever) raises ``filelock.Timeout``.
    """
    if isinstance(config, dict):
        config = PretrainConfig.from_dict(config)
    key = config.key()
    root_path = store_root(root)
    d = entry_dir(config, root_path)
    ckpt = d / CHECKPOINT
    if _valid(d, key, verify):
        _check_provenance(d)
        return ckpt
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / ".lock"), timeout=lock_timeout):
        if _valid(d, key, verify):  # another process finished it while we waited
            _check_provenance(d)
            return ckpt
        (d / META).unlink(missing_ok=True)  # done marker first: a half-rebuilt entry never looks done
        ckpt.unlink(missing_ok=True)
        for tmp in d.glob("*.tmp"):  # left by a writer that crashed
            tmp.unlink(missing_ok=True)
        previous = sum(1 for e in _log_lines(root_path) if e.get("key") == key)
        fn = train_fn or default_pretrain
        t0 = time.time()
        if fn is default_pretrain:
            on_epoch = _with_progress_line(config, t0, on_epoch)
        model, history = fn(config, on_epoch=on_epoch) if on_epoch is not None else fn(config)
        elapsed = time.time() - t0
        save_backbone(model, ckpt, meta={"key": key, "config": config.canonical()})
        meta = {
            "key": key,
            "config": config.to_dict(),
            "canonical_config": config.canonical(),
            "history": _jsonable(history),
            "train_time_s": elapsed,
            "trainings": previous + 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "checkpoint": CHECKPOINT,
            "provenance": training_provenance(),
        }
        _atomic_write_text(d / META, json.dumps(meta, indent=1, allow_nan=False))
        line = json.dumps(
            {"key": key, "model": config.model, "source": config.source, "time_s": round(elapsed, 3),
             "created": meta["created"], "host": meta["host"], "pid": meta["pid"]}
        )
        with open(root_path / LOG, "a") as f:  # one short O_APPEND write: atomic on POSIX
            f.write(line + "\n")
    return ckpt


def _with_progress_line(config: PretrainConfig, t0: float, on_epoch=None):
    """``on_epoch`` that first prints a tqdm-style line per pretraining epoch to stderr (one line
    each: Ray forwards a worker's lines to the driver, where carriage returns do not survive)."""
    import sys

    total = config.recipe.epochs
    what = f"{config.source}{'+edit' if config.edited else ''} {config.model} seed {config.seed}"

    def progress(m: dict) -> None:
        done, elapsed = int(m.get("epoch", 0)), time.time() - t0
        bar = "█" * round(20 * done / max(total, 1))
        eta = elapsed / max(done, 1) * (total - done)
        extra = ", ".join(f"{k}={m[k]:.3f}" for k in ("train_loss", "val_accuracy") if isinstance(m.get(k), float))
        print(f"pretrain {what}: {100 * done / max(total, 1):3.0f}%|{bar:<20}| {done}/{total} epochs "
              f"[{elapsed:.0f}s<{eta:.0f}s{', ' + extra if extra else ''}]", file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(m)

    return progress


def stats(root=None) -> dict:
    """Trainings and entries in the store: ``{"root", "entries", "backbones", "trainings",
    "per_key", "retrained"}`` — ``retrained`` lists keys trained more than once (corrupt
    entries rebuilt, or a broken lock)."""
    root_path = store_root(root)
    per_key: dict[str, int] = {}
    for e in _log_lines(root_path):
        if "key" in e:
            per_key[e["key"]] = per_key.get(e["key"], 0) + 1
    entries = []
    if root_path.is_dir():
        for d in sorted(p for p in root_path.iterdir() if p.is_dir()):
            meta = read_json_dict(d / META)
            if meta is None or "key" not in meta:
                continue
            cfg = meta.get("config", {})
            entries.append(
                {
                    "key": meta["key"],
                    "path": str(d / CHECKPOINT),
                    "model": cfg.get("model"),
                    "source": cfg.get("source"),
                    "edit_family": cfg.get("edit_family"),
                    "edit_strength": cfg.get("edit_strength"),
                    "seed": cfg.get("seed"),
                    "train_time_s": meta.get("train_time_s"),
                    "trainings": per_key.get(meta["key"], meta.get("trainings", 1)),
                }
            )
    return {
        "root": str(root_path),
        "entries": entries,
        "backbones": len(entries),
        "trainings": sum(per_key.values()),
        "per_key": per_key,
        "retrained": sorted(k for k, v in per_key.items() if v > 1),
    }


# ------------------------------------------------------------------------ default pretrain


def _source_dataset(config: PretrainConfig):
    from spectral_ray.data import get_dataset
    from spectral_ray.editing import get_edited_dataset

    if not config.edited:
        return get_dataset(config.source, **config.source_params)
    # The edit's randomness follows the source data's seed (not the pretraining seed), so
    # pretraining seeds share one edited dataset on disk and differ only in init and data order.
    # get_edited_dataset's positional ``seed`` is the edit's seed; the dataset's own seed travels
    # as ``dataset_seed``.
    params = dict(config.source_params)
    data_seed = params.pop("seed", None)
    extra = {} if data_seed is None else {"dataset_seed": data_seed}
    edit_seed = int(data_seed if data_seed is not None else 0)
    return get_edited_dataset(
        config.source, config.edit_family, config.edit_strength, dict(config.edit_params), edit_seed, **extra, **params
    )


def _split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and round(val_fraction * len(labels)) >= len(counts) else None
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(va)


def _initial_model(config: PretrainConfig, *, in_chans: int, num_classes: int):
    """Random init (raw inputs), or the published weights named by ``config.init`` with a fresh
    head and their input normalisation, which pretraining, the priority measured here and the
    saved backbone all keep (spectral_ray.models.set_input_normalization)."""
    if config.init is None:
        from spectral_ray.models import create_model

        return create_model(config.model, in_chans=in_chans, num_classes=num_classes, **config.model_kwargs)
    from spectral_ray.weights import load_pretrained, parse_weights_spec

    source, path = parse_weights_spec(config.init)
    return load_pretrained(config.model, in_chans=in_chans, num_classes=num_classes, source=source, file=path,
                           **config.model_kwargs)


def default_pretrain(config: PretrainConfig, *, on_epoch=None, device=None, priority_images: int = 256):
    """Pretrain ``config.model`` on the (optionally edited) source, from random init or from the
    published weights ``config.init``; returns ``(model, history)``. With ``source == "none"`` the
    model is ``config.init``'s weights untrained (history without epochs or priority).

    The source is split into train / validation (``val_fraction``, stratified, by ``seed``); the
    model has one output per source class and ``in_chans`` = the images' channels. ``history`` is
    :func:`spectral_ray.training.fit`'s plus ``learning_priority`` (unit-sum list, on up to
    ``priority_images`` validation images), ``priority_summary``, ``priority_summary_nodc``,
    ``n_train``, ``n_val`` and ``classes``.
    """
    import torch

    from spectral_ray import spectrum
    from spectral_ray.training import fit

    from spectral_ray.models import input_normalization

    if config.source == "none":
        # published weights as they are: nothing to train, no source data to measure on
        model = _initial_model(config, in_chans=int(config.source_params.get("channels", 1)), num_classes=2)
        return model.cpu(), {"epochs": [], "learning_priority": None, "classes": [],
                             "input_normalization": input_normalization(model)}
    ds = _source_dataset(config)
    tr, va = _split(np.asarray(ds.labels), config.val_fraction, config.seed)
    torch.manual_seed(config.seed)
    model = _initial_model(config, in_chans=ds.images.shape[1], num_classes=len(ds.classes))
    history = fit(
        model,
        (ds.images[tr], ds.labels[tr]),
        (ds.images[va], ds.labels[va]),
        config.recipe,
        seed=config.seed,
        on_epoch=on_epoch,
        device=device,
    )
    sel = va[:priority_images]
    p = spectrum.learning_priority(model, ds.images[sel], ds.labels[sel], normalize="sum")
    history.update(
        learning_priority=p.tolist(),
        priority_summary=spectrum.summarize(p),
        priority_summary_nodc=spectrum.summarize(p, exclude_dc=True),
        n_train=int(len(tr)),
        n_val=int(len(va)),
        classes=list(ds.classes),
        input_normalization=input_normalization(model),  # published weights' preprocessing, kept in the backbone
    )
    model.cpu()
    return model, history

"""Typed configuration: one trial (:class:`TrialConfig`) and one sweep file (:class:`SweepFile`).

A sweep file is YAML::

    name: embedded-quick
    trainable: finetune            # pretrain | finetune | robustness
    storage: results               # local folder or a URI Ray can write (s3://, gs://)
    resources: {cpu: 1, gpu: 0}    # per trial; fractional GPUs allowed
    search: {algorithm: grid}      # or {algorithm: optuna, metric: robustness, mode: max, num_samples: 20}
    params:                        # TrialConfig keys: a fixed value or one of
      source: {grid: [natural, medical]}      #   {grid: [...]}, {choice: [...]},
      degradation: {grid: [0, 0.5, 1]}        #   {uniform: [lo, hi]}, {loguniform: [lo, hi]}
      finetune.lr: 0.001                      # dotted keys reach into the recipes

:func:`load_sweep` checks everything without starting Ray and raises :class:`SweepError` with a
one-paragraph message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spectral_ray.registries import unknown_message
from spectral_ray.training import Recipe, check_fields

__all__ = ["TrialConfig", "TrialError", "trial_error", "SweepFile", "SweepError", "load_sweep", "parse_sweep",
           "DEFAULT_PRETRAIN", "DEFAULT_FINETUNE", "LAB_FINETUNE", "FINETUNE_PRESETS", "recipe_base", "ROLES",
           "field_roles", "fields_with_role", "name_labels"]

# How every preset runs (not what it learns): bf16 autocast in channels-last memory, small-map
# convolutions as one matmul on the CPU, and for fine-tuning the test sets evaluated once, on the
# weights the trial reports (the validation set still every epoch). Their speed-up and the AUCs
# they keep are measured in BENCHMARKS.md (bench/levers.py); the learning
# priority is measured in fp32 regardless. Set finetune.eval_sets_every: 1 for per-epoch
# I.I.D./O.O.D. curves, bf16: false for fp32.
EXECUTION = {"bf16": True, "channels_last": True, "small_map_conv_pixels": 16}
FINETUNE_EXECUTION = {**EXECUTION, "eval_sets_every": 0}
# Pretraining on an embedded source: enough to give a backbone its own priority, quick on 2 cores.
DEFAULT_PRETRAIN = {"epochs": 3, "lr": 2e-3, "batch_size": 64, "weight_decay": 0.05, "augment": True, **EXECUTION}
# Fine-tuning: a gentle recipe (smaller backbone lr) so the pretrained priority can survive (F2).
DEFAULT_FINETUNE = {"epochs": 5, "lr": 1e-3, "backbone_lr_mult": 0.3, "batch_size": 32, "weight_decay": 0.05,
                    **FINETUNE_EXECUTION}
# The authors' fine-tuning recipe (DovileDo/source-matters, fine-tuning.py, Keras 2.15), value by value:
LAB_FINETUNE = {
    "optimizer": "adam", "lr": 1e-3,  # Adam(learning_rate=args.lr), --lr default 0.001
    "adam_eps": 1e-7, "weight_decay": 0.0,  # Keras Adam's defaults: epsilon 1e-7, no weight decay
    "backbone_lr_mult": 1.0, "freeze_stages": 0, "linear_probe_epochs": 0,  # one lr, nothing frozen
    "epochs": 30, "batch_size": 256,  # --epoch default 30, --batch_size default 256
    "head_dropout": 0.5,  # Dropout(0.5) between the pooled features and the Dense softmax
    "augment": False,  # horizontal_flip=False
    "affine_rotation_deg": 10, "affine_shift": 0.1,  # rotation_range=10, width/height_shift_range=0.1
    "affine_shear_deg": 0.1, "affine_zoom": 0.1,  # shear_range=0.1 (degrees in Keras), zoom_range=0.1
    # EarlyStopping(val_loss, patience=30) + ModelCheckpoint(val_loss, save_best_only) + load_model:
    # with 30 epochs it never stops early; the best epoch by val loss is what is evaluated
    "early_stopping_patience": 30,
    "scheduler": "none", "label_smoothing": 0.0,
    **FINETUNE_EXECUTION,  # how it runs; Keras ran fp32 (EXECUTION's comment)
}
# `finetune_preset` names the recipe a trial's `finetune.*` keys are merged over.
FINETUNE_PRESETS = {"default": DEFAULT_FINETUNE, "lab": LAB_FINETUNE}


def recipe_base(name: str, finetune_preset: str = "default") -> dict:
    """The recipe that a trial's ``pretrain`` / ``finetune`` overrides are merged over."""
    if name == "pretrain":
        return DEFAULT_PRETRAIN
    if finetune_preset not in FINETUNE_PRESETS:
        raise ValueError(unknown_message("finetune_preset", finetune_preset, list(FINETUNE_PRESETS)))
    return FINETUNE_PRESETS[finetune_preset]

# What a trial runs (experiment.run_<name>); trainables/<name>.py holds its Ray trainable.
TRAINABLES = ("pretrain", "finetune", "robustness")
# What a finetune trial keeps as its checkpoint: nothing, the fine-tuned classifier head (KiB; the
# pretrained backbone stays in the store) or the fine-tuned network without its head (MiB).
CHECKPOINT_POLICIES = ("none", "head", "full")


class SweepError(ValueError):
    """A sweep file that cannot run; the message says which key is wrong and how to fix it."""


class TrialError(ValueError):
    """A trial configuration that cannot run: ``field`` is the TrialConfig key at fault (e.g.
    ``artifact_params``), ``message`` says what is wrong and what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def trial_error(error: ValidationError) -> TrialError:
    """The first problem of a failed :class:`TrialConfig` validation as a :class:`TrialError`:
    the cross-field checks raise one themselves; a single field's check is named by its location."""
    err = error.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, TrialError):
        return cause
    return TrialError(_fmt_loc(err["loc"]), str(cause) if isinstance(cause, ValueError) else err["msg"])


def _recipe(overrides: dict, base: dict, key: str) -> dict:
    check_fields(Recipe, overrides, f"{key} recipe")
    merged = {**base, **overrides}
    defaults = Recipe()
    for name, value in merged.items():
        default = getattr(defaults, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{key}.{name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not number:
            raise ValueError(f"{key}.{name} must be a number, got {value!r}")
    try:
        Recipe.from_dict(merged)  # validates ranges
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: {e}") from None
    return merged


# What a TrialConfig key is for; every field has exactly one (tests/test_roles.py):
ROLES = {
    "backbone": "what the pretrained backbone is (source data, its edit, weights, seed, recipe, model)",
    "shared": "enters the backbone and the fine-tune alike: the image grid and the data generators",
    "finetune": "the fine-tuning protocol: target data, split, fine-tuning seed and recipe",
    "shortcut": "the planted shortcut: the artifact, its parameters, draws and the degradation",
    "measurement": "how learning priorities are measured (changes no network)",
    "objective": "the robustness trainable's objective (which degradations and folds it scores)",
    "execution": "how a trial runs, not what it computes (threads, where the store lives)",
}


def _role(role: str | None, default, *, label: str | None = None, **field_kwargs):
    """A TrialConfig field of ``role`` (None: the family registry that reads the key declares it);
    ``label``: its prefix in a trial name."""
    extra = {k: v for k, v in (("role", role), ("label", label)) if v is not None}
    return Field(default, json_schema_extra=extra or None, **field_kwargs)


class TrialConfig(BaseModel):
    """Everything one trial needs. All keys can be fixed or swept in a sweep file's ``params``."""

    model_config = ConfigDict(extra="forbid")

    # Each field names its role once (ROLES); the trial keys an artifact or edit family reads
    # (artifact_omega, edit_omega, …) take theirs from the family registry (field_roles).
    # ``label``: how the key reads in a trial name (trainables/tuning.py), in field order.
    # pretraining source (a registered source dataset, or "none" for a random-init backbone)
    source: str = _role("backbone", "natural", label="")
    source_n: int = _role("backbone", 3000, gt=0)
    source_weights: str | None = _role("backbone", None, description="published weights to start from: 'timm', "
                                       "'file:<path>' or 'radimagenet:<path>'; None = random init")
    source_params: dict[str, Any] = _role("backbone", {})
    seed: int = _role("backbone", 0, ge=0, label="seed",
                      description="pretraining seed (model init, data order, edit draws)")
    edit: str = _role("backbone", "none", label="")
    edit_strength: float = _role("backbone", 0.0, label="s")
    edit_omega: float | None = _role(None, None, label="e")  # None = the edit family's default
    edit_params: dict[str, Any] = _role("backbone", {})
    pretrain: dict[str, Any] = _role("backbone", {})
    model: str = _role("backbone", "resnet10t")
    # fine-tuning target and its shortcut
    target: str = _role("finetune", "ct_lesion", label="")
    target_n: int | None = _role("finetune", None, gt=0)
    target_params: dict[str, Any] = _role("finetune", {})
    artifact: str = _role("shortcut", "band", label="")
    artifact_omega: float | None = _role(None, None, gt=0, le=1, label="w")
    artifact_amplitude: float | None = _role(None, None, ge=0, label="a")
    artifact_params: dict[str, Any] = _role("shortcut", {})
    degradation: float = _role("shortcut", 0.0, ge=0, le=1, label="d")
    fold: int = _role("finetune", 0, ge=0, label="f")
    n_folds: int = _role("finetune", 5, ge=2)
    finetune_seed: int | None = _role("finetune", None, ge=0, description="seed of the head's init, batch order and "
                                      "augmentation; None = derived from the backbone and fold (derived_seed)")
    artifact_seed: int | None = _role("shortcut", None, ge=0, description="seed of which positives carry the "
                                      "artifact and its noise; None = derived from the backbone and fold (derived_seed)")
    finetune_preset: str = _role("finetune", "default", description="the recipe `finetune` is merged over: "
                                 + ", ".join(FINETUNE_PRESETS))
    finetune: dict[str, Any] = _role("finetune", {})
    # shared by the backbone and the fine-tune: the image grid and the data generators
    data_seed: int = _role("shared", 0, ge=0, description="seed of the embedded data generators")
    size: int = _role("shared", 64, description="image side in pixels: even, >= spectral_ray.data.dataset.MIN_SIZE")
    channels: int = _role("shared", 1, ge=1, le=4)
    psd_images: int = _role("measurement", 256, gt=0, description="images used to measure a learning priority")
    threads: int = _role("execution", 1, ge=1, description="torch threads per trial (match resources.cpu)")
    store: str | None = _role("execution", None, description="backbone store root (shared storage on a cluster)")
    # robustness objective
    degradations: list[float] = _role("objective", [0.0, 0.1, 0.2, 0.5, 0.8, 1.0])
    folds: list[int] = _role("objective", [0])
    iid_floor: float | None = _role("objective", None, ge=0, le=1)

    @field_validator("size")
    @classmethod
    def _grid(cls, v):
        """The one image-size rule every dataset builder applies, so a trial fails here, not inside."""
        from spectral_ray.data.dataset import check_size

        check_size(v)
        return v

    @field_validator("finetune_seed", "artifact_seed", mode="before")
    @classmethod
    def _whole_seed(cls, v):
        """An integer (a whole float such as a table's 3.0 too); not a bool, a string or 1.5."""
        import numbers

        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v != int(v):
            raise ValueError(f"a seed must be an integer >= 0 or null, got {v!r}")
        return int(v)

    @field_validator("degradations")
    @classmethod
    def _degradations(cls, v):
        if not v or any(not 0 <= d <= 1 for d in v):
            raise ValueError(f"degradations must be a non-empty list of values in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _check_names(self):
        """Cross-field checks; each raises :class:`TrialError` naming the key at fault."""
        from spectral_ray.artifacts import FAMILIES, get_artifact
        from spectral_ray.data import list_datasets
        from spectral_ray.editing import EDITS, get_edit, is_edit
        from spectral_ray.families import ParamError

        sources = list_datasets("source")
        if self.source != "none" and self.source not in sources:
            raise TrialError("source", unknown_message("source", self.source, sources + ["none"]))
        if self.source == "none" and is_edit(self.edit, self.edit_strength):
            raise TrialError("edit", "an edit needs a source dataset to edit; `source: none` has none")
        if self.source_weights is not None:
            from spectral_ray.weights import parse_weights_spec

            try:
                parse_weights_spec(self.source_weights)
            except ValueError as e:
                raise TrialError("source_weights", str(e)) from None
        targets = list_datasets("target")
        if self.target not in targets:
            raise TrialError("target", unknown_message("target", self.target, targets))
        if self.fold >= self.n_folds:
            raise TrialError("fold", f"fold must be in [0, n_folds={self.n_folds}), got {self.fold}")
        if any(not 0 <= f < self.n_folds for f in self.folds):
            raise TrialError("folds", f"folds must be in [0, n_folds={self.n_folds}), got {self.folds}")
        for registry, make in ((FAMILIES, lambda: get_artifact(self.artifact, **self.artifact_kwargs())),
                               (EDITS, lambda: get_edit(self.edit, self.edit_strength, **self.edit_kwargs()))):
            try:
                make()
            except ParamError as e:
                raise TrialError(_culprit(e, registry, self), str(e)) from None
        try:
            recipe_base("finetune", self.finetune_preset)
        except ValueError as e:
            raise TrialError("finetune_preset", str(e)) from None
        for name in ("pretrain", "finetune"):
            try:
                setattr(self, name, _recipe(getattr(self, name), recipe_base(name, self.finetune_preset), name))
            except (TypeError, ValueError) as e:
                raise TrialError(name, str(e)) from None
        if not _is_model(self.model):
            raise TrialError("model", unknown_message("model", self.model, sorted(_timm_models()), show=0))
        return self

    def artifact_kwargs(self) -> dict:
        """The artifact's parameters: ``artifact_params`` plus the trial keys its family reads."""
        from spectral_ray.artifacts import FAMILIES

        return FAMILIES.trial_kwargs(self.artifact, dict(self), self.artifact_params)

    def edit_kwargs(self) -> dict:
        """The edit's parameters: ``edit_params`` plus the trial keys its family reads."""
        from spectral_ray.editing import EDITS

        return EDITS.trial_kwargs(self.edit, dict(self), self.edit_params)

    def backbone_identity(self) -> dict:
        """The keys that define the pretrained backbone, canonical (the one list the derived seeds
        read): source, its weights, data and parameters, the edit (none when its strength is 0;
        its parameters resolved), the pretraining seed, model, size, channels, pretraining recipe
        and data seed. A random-init backbone (``source: none``) has no source data, edit or
        recipe. Its keys are the ``backbone`` and ``shared`` roles (the edit's resolved into one;
        tests/test_roles.py). Not the store's hash key (:meth:`backbone`'s), which also names code
        and library versions."""
        from spectral_ray.editing import get_edit, is_edit

        ident: dict = {"source": self.source, "source_weights": self.source_weights, "seed": self.seed,
                       "model": self.model, "size": self.size, "channels": self.channels, "data_seed": self.data_seed}
        if self.source != "none":
            edit = get_edit(self.edit, self.edit_strength, **self.edit_kwargs()) if is_edit(self.edit, self.edit_strength) else None
            ident.update(source_n=self.source_n, source_params=self.source_params, pretrain=self.pretrain,
                         edit=None if edit is None else {"family": edit.family, "strength": edit.strength,
                                                         "params": edit.params})
        return ident

    def backbone(self):
        """The store's :class:`~spectral_ray.store.PretrainConfig` of this trial's backbone: its
        ``backbone`` keys and the ``shared`` image grid and data generators (size, channels,
        data seed). ``threads`` is passed to the recipe, which the store's key leaves out."""
        from spectral_ray.store import PretrainConfig

        return PretrainConfig(
            source=self.source,
            source_params={"size": self.size, "channels": self.channels, "n": self.source_n, "seed": self.data_seed,
                           **self.source_params},
            edit_family=self.edit,
            edit_strength=self.edit_strength,
            edit_params=self.edit_kwargs(),
            model=self.model,
            recipe=Recipe.from_dict({**self.pretrain, "num_threads": self.threads}),
            seed=self.seed,
            init=self.source_weights,
        )

    def derived_seed(self, stream: str) -> int:
        """A seed in [0, 2³¹) for ``stream`` (``"finetune"`` or ``"artifact"``): SHA-256 of the
        canonical JSON of :meth:`backbone_identity` and the stream name; stable across processes
        and machines (no ``hash()``).

        Independent of the degradation, the artifact and its parameters, so the trials of one
        (model, fold) at every d share the head's init, batch order and artifact draws, and d = 0
        twins stay one network; independent of the target too. Different backbones (e.g. natural
        and medical at one pretraining seed) get unrelated seeds. The fold does not enter: a
        random-init backbone is drawn with the fine-tuning seed, and it must stay one backbone
        across its folds as a pretrained one does (one unit of a pretraining effect); the folds
        still differ in their data, and ``make_splits`` mixes the fold into every artifact draw."""
        if stream not in SEED_STREAMS:
            raise ValueError(f"unknown seed stream {stream!r}; allowed: {', '.join(map(repr, SEED_STREAMS))}")
        payload = {"backbone": _canonical(self.backbone_identity()), "stream": stream}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).digest()
        return int.from_bytes(digest[:4], "big") >> 1

    @property
    def effective_finetune_seed(self) -> int:
        """The fine-tuning seed the trial uses: ``finetune_seed``, else :meth:`derived_seed`
        ("finetune"). A random-init backbone is drawn with it too."""
        return self.derived_seed("finetune") if self.finetune_seed is None else self.finetune_seed

    @property
    def effective_artifact_seed(self) -> int:
        """The seed of the artifact assignment (``make_splits``'s ``seed``): ``artifact_seed``,
        else :meth:`derived_seed` ("artifact")."""
        return self.derived_seed("artifact") if self.artifact_seed is None else self.artifact_seed


SEED_STREAMS = ("finetune", "artifact")


@lru_cache(maxsize=4)
def field_roles(model: type[BaseModel] | None = None) -> dict[str, str]:
    """{TrialConfig key: its role (a key of :data:`ROLES`)}, in field order (``model``: a subclass
    to check instead). A key an artifact family reads (``FAMILIES.trial_keys()``) is a
    ``shortcut`` key, one an edit family reads a ``backbone`` key; the others declare their role
    on the field. ValueError for a field with no role, two, or an unknown one."""
    from spectral_ray.artifacts import FAMILIES
    from spectral_ray.editing import EDITS

    declared = {key: role for registry, role in ((FAMILIES, "shortcut"), (EDITS, "backbone"))
                for key in registry.trial_keys()}
    out = {}
    for name, info in (model or TrialConfig).model_fields.items():
        own = (info.json_schema_extra or {}).get("role")
        if own is not None and name in declared:
            raise ValueError(f"TrialConfig.{name}: its role is declared on the field ({own!r}) and by the "
                             f"{declared[name]} families' trial keys; declare it once")
        role = own if own is not None else declared.get(name)
        if role not in ROLES:
            raise ValueError(f"TrialConfig.{name} has {'no role' if role is None else f'the unknown role {role!r}'}; "
                             f"give it one of {', '.join(ROLES)} (config._role)")
        out[name] = role
    return out


def fields_with_role(*roles: str) -> tuple[str, ...]:
    """The TrialConfig keys of any of ``roles``, in field order (ValueError for an unknown role)."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(map(repr, unknown))}; roles: {', '.join(ROLES)}")
    return tuple(k for k, role in field_roles().items() if role in roles)


def name_labels() -> tuple[tuple[str, str], ...]:
    """((key, prefix), …) of the keys that have a trial-name prefix, in field order: how a trial
    name reads (``natural-seed1-lowpass-s0.5-…``; trainables/tuning.py)."""
    return tuple((k, info.json_schema_extra["label"]) for k, info in TrialConfig.model_fields.items()
                 if "label" in (info.json_schema_extra or {}))


def _canonical(value):
    """JSON-ready ``value`` with numbers as floats (YAML's 1 and 1.0 are one value) and tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


@lru_cache(maxsize=1)
def _timm_models() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def _is_model(name: str) -> bool:
    return name in _timm_models()


def _culprit(error, registry, trial: TrialConfig) -> str:
    """Which TrialConfig key a :class:`~spectral_ray.families.ParamError` of an artifact or edit
    is about: the family key for an unknown family, ``edit_strength``, the trial key that set the
    parameter, else the ``*_params`` dict."""
    kind = registry.kind
    if error.param is None:
        return kind
    if error.param == "strength" and kind == "edit":
        return "edit_strength"
    name = getattr(trial, kind)
    key = registry[name].trial_key(error.param) if name in registry and error.family == name else None
    return key if key is not None and getattr(trial, key) is not None else f"{kind}_params"


# -------------------------------------------------------------------------------- sweep files

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "cases")
SAMPLED = ("choice", "uniform", "loguniform")
DICT_PARAMS = ("source_params", "edit_params", "target_params", "artifact_params", "pretrain", "finetune")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class Scheduler(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1)
    max_t: int = Field(10, ge=1)
    reduction_factor: float = Field(2, gt=1)


class Search(BaseModel):
    """``grid``: every combination of ``grid``/``cases`` axes, once (duplicates that differ only
    in keys the trial ignores are dropped). ``random``: Tune's own sampling of ``choice``/
    ``uniform``/``loguniform`` axes (crossed with ``grid`` axes), ``num_samples`` times.
    ``optuna``: Optuna's TPE over the sampled axes for ``num_samples`` trials."""

    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    metric: str | None = None
    mode: Literal["min", "max"] = "max"
    num_samples: int = Field(1, ge=1)
    seed: int = 0
    scheduler: Scheduler | None = None


class WandbLogger(BaseModel):
    """Ray Tune's ``WandbLoggerCallback`` (extra ``spectral-ray[wandb]``): each trial a W&B run."""

    model_config = ConfigDict(extra="forbid")
    project: str | None = Field(None, description="W&B project (default: the sweep's name)")
    group: str | None = None
    mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline (default) needs no account: `wandb sync` uploads the runs later")
    dir: str | None = Field(None, description="where W&B writes its files (default: its own, ./wandb)")


class MLflowLogger(BaseModel):
    """Ray Tune's ``MLflowLoggerCallback`` (extra ``spectral-ray[mlflow]``): each trial an MLflow run."""

    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = Field(None, description="e.g. sqlite:///path/mlflow.db or http://host:5000 "
                                     "(default: $MLFLOW_TRACKING_URI, else MLflow's own default)")
    experiment_name: str | None = Field(None, description="default: the sweep's name")


class Loggers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wandb: WandbLogger | None = None
    mlflow: MLflowLogger | None = None


# `loggers.<name>` → the Python package it needs and the extra that installs it.
LOGGER_PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


class SweepFile(BaseModel):
    """A validated sweep file. ``params`` keeps the raw search-space spec per TrialConfig key."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    trainable: Literal[TRAINABLES] = "finetune"
    storage: str = "results"
    resources: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=-1, description="retries per trial (-1 = unlimited)")
    checkpoint: Literal[CHECKPOINT_POLICIES] = "head"
    search: Search = Search()
    loggers: Loggers | None = Field(None, description="Ray Tune's W&B / MLflow callbacks, beside TensorBoard")
    params: dict[str, Any] = {}

    def axes(self) -> dict[str, tuple[str, Any]]:
        """{key: (kind, value)} with kind ∈ fixed, grid, choice, uniform, loguniform, cases."""
        return {k: _space(v) for k, v in self.params.items()}

    def trials(self) -> list[dict]:
        """The grid's trials as flat configs: the product of ``grid`` and ``cases`` axes with the
        fixed values (sampled axes at their first value / lower bound), normalised (keys the
        trial ignores reset to their defaults) and without duplicates, in a stable order where
        the first axis varies fastest."""
        axes = self.axes()
        options = []
        for key, (kind, value) in axes.items():
            if kind == "grid":
                options.append([{key: v} for v in value])
            elif kind == "cases":
                options.append([dict(case) for case in value])
            elif kind in ("uniform", "loguniform", "choice"):
                options.append([{key: value[0]}])
            else:
                options.append([{key: value}])
        seen, out = set(), []
        # first axis fastest: iterate the product over the reversed axis list
        for combo in itertools.product(*reversed(options)):
            flat = {}
            for part in reversed(combo):
                flat.update(part)
            flat = normalize_trial(flat)
            ident = repr(sorted(flat.items(), key=lambda kv: kv[0]))
            if ident not in seen:
                seen.add(ident)
                out.append(flat)
        keys = list(dict.fromkeys(k for t in out for k in t))
        return [{k: t.get(k, _default(k, t.get("finetune_preset", "default"))) for k in keys} for t in out]

    def num_trials(self) -> int:
        if self.search.algorithm == "grid":
            return len(self.trials())
        grid = math.prod(len(v) for kind, v in self.axes().values() if kind == "grid")
        return grid * self.search.num_samples


def _default(key: str, finetune_preset: str = "default"):
    head, _, rest = key.partition(".")
    if rest:
        return recipe_base(head, finetune_preset).get(rest, getattr(Recipe(), rest))
    value = TrialConfig.model_fields[key].default
    return value.copy() if isinstance(value, (dict, list)) else value


def normalize_trial(flat: dict) -> dict:
    """Reset keys that the trial's artifact/edit family ignores, so that grid points differing
    only in them are recognised as the same trial (e.g. ``artifact_omega`` for ``nlm``; the edit's
    family and band when its strength is 0, which is the unedited source)."""
    from spectral_ray.artifacts import FAMILIES
    from spectral_ray.editing import EDITS, is_edit

    out = dict(flat)
    if not is_edit(out.get("edit", "none"), out.get("edit_strength", 0.0)):
        for key, value in (("edit", "none"), ("edit_strength", 0.0), ("edit_params", {})):
            if key in out:
                out[key] = value
    for registry in (FAMILIES, EDITS):
        for key in registry.ignored_keys(out.get(registry.kind, _default(registry.kind))):
            if key in out:
                out[key] = None
    return out


def _space(value) -> tuple[str, Any]:
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_KINDS:
        kind, v = next(iter(value.items()))
        return kind, v
    return "fixed", value


def nest(flat: dict) -> dict:
    """{'finetune.lr': x} -> {'finetune': {'lr': x}} (the shape TrialConfig takes)."""
    out: dict = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out


# ------------------------------------------------------------------------------ validation


def _fmt_loc(loc) -> str:
    return ".".join(str(p) for p in loc)


def _pydantic_messages(err: ValidationError) -> list[str]:
    """One message per error pydantic found (it checks every key, not only the first)."""
    return [_pydantic_message(e) for e in err.errors()]


def _pydantic_message(e: dict, prefix: str = "") -> str:
    loc = prefix + _fmt_loc(e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        top = e["loc"][:-1]
        model = {"": SweepFile, "resources": Resources, "search": Search, "search.scheduler": Scheduler,
                 "loggers": Loggers, "loggers.wandb": WandbLogger, "loggers.mlflow": MLflowLogger}.get(_fmt_loc(top), SweepFile)
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown key `{loc}`.{hint} Allowed keys here: {', '.join(allowed)}."
    if "input" in e and e["type"] != "missing":
        return f"key `{loc}`: {msg} (got {e['input']!r})."
    return f"key `{loc}`: {msg}."


def _check_axis(key: str, kind: str, value) -> list:
    """The concrete values to validate for one axis, or SweepError."""
    if kind in ("grid", "choice"):
        if not isinstance(value, list) or not value:
            raise SweepError(f"key `params.{key}`: `{kind}` needs a non-empty list of values, got {value!r}. "
                             f"Write e.g. `{key}: {{{kind}: [a, b]}}`, or a plain value to fix it.")
        return value
    if kind in ("uniform", "loguniform"):
        ok = (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
              and value[0] < value[1] and (kind == "uniform" or value[0] > 0))
        if not ok:
            need = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
            raise SweepError(f"key `params.{key}`: `{kind}` needs two numbers [lo, hi] with {need}, got {value!r}.")
        return list(value)
    return [value]


def _allowed_keys() -> list[str]:
    recipe = sorted(Recipe.__dataclass_fields__)
    return list(TrialConfig.model_fields) + [f"pretrain.{k}" for k in recipe] + [f"finetune.{k}" for k in recipe]


def _problems(source: str, errors: list[str]) -> SweepError:
    errors = list(dict.fromkeys(errors))  # two options of one axis can fail the same way
    if len(errors) == 1:
        return SweepError(errors[0])
    return SweepError(f"{source}: {len(errors)} problems:\n" + "\n".join(f"  - {e.removeprefix(source + ': ')}"
                                                                         for e in errors))


def parse_sweep(raw: Any, source: str = "sweep file", *, check_storage: bool = True) -> SweepFile:
    """Validate a parsed YAML document; raise SweepError naming the key, value and fix of every
    problem it finds (checks that build on a failed one are skipped)."""
    if not isinstance(raw, dict):
        raise SweepError(f"{source}: the file must be a YAML mapping with keys like `name`, `trainable`, `params`; "
                         f"got {type(raw).__name__}.")
    try:
        sweep = SweepFile.model_validate(raw)
    except ValidationError as e:
        raise _problems(source, [f"{source}: {m}" for m in _pydantic_messages(e)]) from None
    errors: list[str] = []
    errors += _missing_logger_packages(sweep, source)
    if sweep.search.algorithm == "optuna" and not sweep.search.metric:
        errors.append(f"{source}: key `search.metric` is required with `search.algorithm: optuna` "
                      f"(e.g. `metric: robustness` for the robustness trainable, `ood_auc` for finetune).")
    axes = _parse_axes(sweep, source, errors)
    # each value on its own (clear messages), then every trial of the grid (combinations)
    fixed = {k: v for options in axes.values() for k, v in options[0].items()}
    for key, options in axes.items():
        # an option replaces its axis's first option entirely: keys only that one sets must not leak
        base = {k: v for k, v in fixed.items() if k not in options[0]}
        for option in options:
            _collect(errors, _validate_trial, {**base, **option}, source, key if len(option) == 1 else None,
                     next(iter(option.values())))
    if check_storage:
        _collect(errors, _check_storage, sweep.storage, source)
        if fixed.get("store"):
            _collect(errors, _check_storage, fixed["store"], source, key="params.store")
    if errors or len(axes) < len(sweep.params):
        raise _problems(source, errors)
    trials = sweep.trials()
    missing = sorted({m for flat in trials for m in missing_paths(flat)})
    if missing:
        raise SweepError(f"{source}: {len(missing)} data/weights path(s) are missing on this machine: "
                         + "; ".join(missing) + ". Set them in the sweep's params (or with --set KEY=VALUE); "
                         "docs/REAL_DATA.md describes each layout.")
    for flat in itertools.islice(iter(trials), 50000):
        _validate_trial(flat, source, None, None)
    return sweep


def _missing_logger_packages(sweep: SweepFile, source: str) -> list[str]:
    """A message per ``loggers`` entry whose package is not installed (found without importing it)."""
    import importlib.util

    out = []
    for name, (package, extra) in LOGGER_PACKAGES.items():
        if sweep.loggers is not None and getattr(sweep.loggers, name) is not None \
                and importlib.util.find_spec(package) is None:
            out.append(f"{source}: key `loggers.{name}` needs the `{package}` package, which is not installed here; "
                       f"install it with `pip install 'spectral-ray[{extra}]'` or remove the key.")
    return out


def _collect(errors: list[str], check, *args, **kwargs):
    """``check(*args, **kwargs)``, its SweepError appended to ``errors`` instead of raised."""
    try:
        return check(*args, **kwargs)
    except SweepError as e:
        errors.append(str(e))
        return None


def _parse_axes(sweep: SweepFile, source: str, errors: list[str]) -> dict[str, list[dict]]:
    """{key: the axis's options as {key: value} mappings} of every key that passes its checks."""
    allowed = _allowed_keys()
    axes = {}
    for key, spec in sweep.params.items():
        options = _collect(errors, _axis_options, key, spec, allowed, source, sweep.search.algorithm)
        if options is not None:
            axes[key] = options
    return axes


def _axis_options(key: str, spec, allowed: list[str], source: str, algorithm: str) -> list[dict]:
    kind, value = _space(spec)
    if kind == "cases":
        return _check_cases(key, value, allowed, source, algorithm)
    _check_key(key, allowed, source)
    if isinstance(spec, dict) and kind == "fixed" and key not in DICT_PARAMS:
        raise SweepError(f"{source}: key `params.{key}`: {spec!r} is not a value or a search space; "
                         f"use one of {', '.join('{' + k + ': ...}' for k in SPACE_KINDS)}.")
    if kind == "grid" and algorithm == "optuna":
        raise SweepError(f"{source}: key `params.{key}` uses `grid`, which Optuna cannot sample; "
                         f"use `choice` with the same list instead.")
    if kind in SAMPLED and key == "finetune_preset":
        raise SweepError(f"{source}: key `params.finetune_preset` uses `{kind}`; a preset decides the whole "
                         f"fine-tuning recipe before the search starts, so list presets with `grid` or `cases`.")
    if kind in SAMPLED and algorithm == "grid":
        raise SweepError(f"{source}: key `params.{key}` uses `{kind}`, which needs a sampling search; set "
                         f"`search: {{algorithm: optuna, metric: ..., num_samples: N}}` (or `algorithm: random`), "
                         f"or use `grid` with a list of values.")
    return [{key: v} for v in _check_axis(key, kind, value)]


def missing_paths(flat: dict) -> list[str]:
    """Every path a trial would read that is unset or absent: real datasets' path parameters and
    local weights files. Reads nothing."""
    from spectral_ray.data import missing_paths as dataset_missing  # path parameters as each reader registered them

    nested = nest(flat)
    out = []
    for role in ("source", "target"):
        name = nested.get(role, _default(role))
        out += [f"{role} {m}" for m in dataset_missing(name, nested.get(f"{role}_params") or {})]
    spec = nested.get("source_weights")
    if spec:
        from spectral_ray.weights import parse_weights_spec

        try:
            kind, path = parse_weights_spec(spec)
        except ValueError:
            return out  # reported with its key by the trial validation
        if path and not Path(path).expanduser().exists():
            out.append(f"source_weights ({kind}) not found: {Path(path).expanduser()}")
    return out


def _check_key(key: str, allowed: list[str], source: str) -> None:
    if key in allowed:
        return
    head, dot, rest = key.partition(".")
    if dot and head in ("pretrain", "finetune"):
        names = sorted(Recipe.__dataclass_fields__)
        aliases = {"learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "n_epochs": "epochs"}
        close = [aliases[rest]] if rest in aliases else difflib.get_close_matches(rest, names, n=1, cutoff=0.75)
        hint = f" Did you mean {head + '.' + close[0]!r}?" if close else ""
        if key == "finetune.preset":
            hint = f" A preset is chosen with `finetune_preset: NAME` ({', '.join(FINETUNE_PRESETS)})."
        raise SweepError(f"{source}: unknown recipe key `params.{key}`.{hint} Recipe keys: {', '.join(names)}.")
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SweepError(f"{source}: unknown parameter `params.{key}`.{hint} Allowed parameters: "
                     f"{', '.join(TrialConfig.model_fields)} (and pretrain.<recipe key>, finetune.<recipe key>; "
                     f"or any name with `{{cases: [...]}}`).")


def _check_cases(key: str, cases, allowed: list[str], source: str, algorithm: str) -> list[dict]:
    """A ``cases`` axis: a list of mappings of fixed TrialConfig values that go together (e.g. a
    target with the artifact that fits its modality)."""
    if algorithm != "grid":
        raise SweepError(f"{source}: key `params.{key}` uses `cases`, which only a grid search expands; "
                         f"set `search.algorithm: grid` or write the axes separately.")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) and c for c in cases):
        raise SweepError(f"{source}: key `params.{key}`: `cases` needs a non-empty list of non-empty mappings, "
                         f"e.g. `{{cases: [{{target: ct_lesion, artifact: photon_noise}}, {{target: mri_knee, artifact: nlm}}]}}`.")
    for case in cases:
        for k, v in case.items():
            _check_key(k, allowed, f"{source}: in `params.{key}`")
            if isinstance(v, dict) and k not in DICT_PARAMS:
                raise SweepError(f"{source}: key `params.{key}`: case value `{k}: {v!r}` must be a plain value; "
                                 f"search spaces go on their own axis.")
    return [dict(c) for c in cases]


def _validate_trial(flat: dict, source: str, key: str | None, value) -> TrialConfig:
    try:
        return TrialConfig.model_validate(nest(flat))
    except ValidationError as e:
        problem = trial_error(e)
        field, msg = problem.field, problem.message
        if field in ("pretrain", "finetune"):
            bad = [k for k in flat if k.startswith(field + ".")]
            field = bad[0] if len(bad) == 1 else field
        shown = flat.get(field, value if key == field else None)
        got = f" (value {shown!r})" if field in flat else ""
        if key is None:
            got += f" in the combination {flat}"
        raise SweepError(f"{source}: key `params.{field or key}`{got}: {msg}") from None


def _check_storage(storage: str, source: str, key: str = "storage") -> None:
    if "://" in storage and not storage.startswith("file://"):
        return  # remote storage: Ray checks credentials when it starts
    path = Path(storage.removeprefix("file://")).expanduser()
    probe = path
    while not probe.exists():
        probe = probe.parent
    writable = probe.is_dir()
    if writable:
        try:  # os.access says yes to root everywhere; a real file creation is the honest test
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError:
            writable = False
    if not writable:
        raise SweepError(f"{source}: key `{key}`: cannot write results under {str(path)!r} "
                         f"({str(probe)!r} is not a writable folder). Choose a folder you can write, "
                         f"or pass --storage DIR.")


def _merge(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s keys replaced, mappings merged at every depth."""
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_sweep(path: str | os.PathLike, *, check_storage: bool = True, overrides: dict | None = None,
               param_overrides: dict | None = None) -> SweepFile:
    """Read and validate a sweep file. ``overrides`` replace top-level keys (e.g. storage, name),
    ``param_overrides`` keys of ``params``; both before validation."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SweepError(f"sweep file {str(path)!r} does not exist.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read sweep file {str(path)!r}: {e.__class__.__name__}.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"{path}: YAML syntax error{where}: {problem}. Check indentation and that lists use "
                         f"[a, b] or '- ' items.") from None
    source = str(path)
    if isinstance(raw, dict) and overrides:
        # a mapping (e.g. {"search": {"scheduler": {"grace_period": 2}}}) updates the file's key by key
        raw = _merge(raw, {k: v for k, v in overrides.items() if v is not None})
    if isinstance(raw, dict) and param_overrides:
        raw = {**raw, "params": {**(raw.get("params") or {}), **param_overrides}}
        source += " (with --set)"
    return parse_sweep(raw, source, check_storage=check_storage)

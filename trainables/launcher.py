"""Turn a validated sweep file into a ``tune.Tuner`` and run it (locally or on a cluster).

On a cluster this runs on the head node (``ray submit``/``ray job submit`` of
``sweeps/launch.py``); ``ray.init`` joins the running cluster through ``RAY_ADDRESS`` or
``address="auto"`` when one is up, and starts a local one otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from spectral_ray.config import SweepFile, nest

SWEEP_COPY = "sweep.yaml"


def storage_uri(storage: str) -> str:
    """Ray needs an absolute path or a URI."""
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def experiment_path(sweep: SweepFile) -> str:
    return f"{storage_uri(sweep.storage).rstrip('/')}/{sweep.name}"


def default_store(sweep: SweepFile) -> str | None:
    """Where backbones live when the sweep sets no ``params.store``: ``$SPECTRAL_RAY_STORE`` when
    set (a cluster's shared store, docs/CLUSTER.md), else beside the experiments (shared by
    every sweep under the same storage) when storage is a local/shared folder; with a URI storage
    and no variable, None (each worker's own default)."""
    from spectral_ray import store

    if os.environ.get(store.ENV_VAR):
        return str(store.store_root().resolve())  # the variable, read as the store reads it
    if "://" in sweep.storage and not sweep.storage.startswith("file://"):
        return None
    return str(Path(storage_uri(sweep.storage.removeprefix("file://"))) / "backbones")


def _trial_constants(sweep: SweepFile, flat: dict) -> dict:
    """threads from resources.cpu; the store path absolute (workers run in their trial folder)."""
    out = dict(flat)
    out.setdefault("threads", max(1, int(sweep.resources.cpu)))
    store = out.get("store")
    if isinstance(store, str) and "://" not in store:
        out["store"] = str(Path(store).expanduser().resolve())
    elif store is None:
        out["store"] = default_store(sweep)
    return out


def store_path(sweep: SweepFile) -> str | None:
    """Where this sweep's trials keep pretrained backbones."""
    fixed = {k: v for k, (kind, v) in sweep.axes().items() if kind == "fixed"}
    return _trial_constants(sweep, {"store": fixed.get("store")})["store"]


def resolved(nested: dict) -> dict:
    """Every TrialConfig key with its default filled in (recipes merged over their defaults), so
    each trial's params.json says exactly what ran, whatever later code versions default to.
    Search-space objects pass through untouched."""
    from spectral_ray.config import TrialConfig, recipe_base

    out = TrialConfig.model_construct().model_dump(mode="python")
    preset = nested.get("finetune_preset", out["finetune_preset"])  # never sampled (parse_sweep)
    for name in ("pretrain", "finetune"):
        out[name] = {**recipe_base(name, preset), **nested.get(name, {})}
    out.update({k: v for k, v in nested.items() if k not in ("pretrain", "finetune")})
    return out


def grid_points(sweep: SweepFile) -> list[dict]:
    """The grid's trials as full nested configs (see ``SweepFile.trials``)."""
    return [resolved(nest(_trial_constants(sweep, flat))) for flat in sweep.trials()]


def param_space(sweep: SweepFile) -> dict:
    """Tune's param_space. Grid search: the keys of the explicit trial list (values are filled in
    per trial by the search algorithm). Random/Optuna: grid → grid_search, choice/uniform/
    loguniform → Tune's samplers; dotted keys nested into the recipes."""
    if sweep.search.algorithm == "grid":
        return grid_points(sweep)[0]
    from ray import tune

    make = {"grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    flat = {key: value if kind == "fixed" else make[kind](value) for key, (kind, value) in sweep.axes().items()}
    return resolved(nest(_trial_constants(sweep, flat)))


def build_tuner(sweep: SweepFile, *, resume: bool = False):
    """A ``tune.Tuner`` for the sweep, or the restored one when its experiment exists and
    ``resume`` is set (finished trials are kept, unfinished and errored ones run again)."""
    from ray import tune

    from trainables import get_trainable

    trainable = tune.with_resources(get_trainable(sweep.trainable),
                                    {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    path = experiment_path(sweep)
    if resume:
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=True)

    search_alg, scheduler, metric, mode = None, None, sweep.search.metric, sweep.search.mode
    num_samples = sweep.search.num_samples
    if sweep.search.algorithm == "grid":
        from ray.tune.search import BasicVariantGenerator

        # An explicit trial list: paired `cases` and no duplicate trials, which a cartesian
        # grid_search cannot express.
        points = grid_points(sweep)
        search_alg = BasicVariantGenerator(points_to_evaluate=points)
        num_samples = len(points)
    elif sweep.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        import optuna

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed))
    if sweep.search.scheduler is not None:
        from ray.tune.schedulers import ASHAScheduler

        s = sweep.search.scheduler
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=s.grace_period, max_t=s.max_t,
                                  reduction_factor=s.reduction_factor)
    tune_config = tune.TuneConfig(
        num_samples=num_samples,
        search_alg=search_alg,
        scheduler=scheduler,
        metric=metric if (sweep.search.algorithm == "optuna" or scheduler) else None,
        mode=mode if (sweep.search.algorithm == "optuna" or scheduler) else None,
        max_concurrent_trials=sweep.max_concurrent,
        # one worker process runs trial after trial instead of re-importing torch/timm/Ray for
        # each (≈ 3 s of a tiny trial's 8 s here; bench/overheads.py)
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=sweep.name,
        storage_path=storage_uri(sweep.storage),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        # the trainables write TensorBoard images into the trial's working directory, which is
        # only copied to the experiment folder with artifact syncing on (with reused workers the
        # working directory is not the trial folder)
        sync_config=tune.SyncConfig(sync_artifacts=True),
        verbose=1,
    )
    return tune.Tuner(trainable, param_space=param_space(sweep), tune_config=tune_config, run_config=run_config)


def experiment_exists(sweep: SweepFile) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(experiment_path(sweep))


def _saved_sweep_path(sweep: SweepFile) -> Path | None:
    path = experiment_path(sweep)
    return None if "://" in path else Path(path) / SWEEP_COPY


def check_same_sweep(sweep: SweepFile) -> str | None:
    """None when the experiment on disk was made by the same sweep (so resuming is safe), else
    a message saying what differs."""
    saved = _saved_sweep_path(sweep)
    if saved is None or not saved.exists():
        return None
    before = yaml.safe_load(saved.read_text())
    now = sweep.model_dump(mode="json")
    diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k != "description")
    return None if not diff else f"the sweep file changed since that experiment started (keys: {', '.join(diff)})"


def save_sweep(sweep: SweepFile) -> None:
    saved = _saved_sweep_path(sweep)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))


def init_ray() -> None:
    """Join a running cluster (RAY_ADDRESS, or one started with ``ray start`` on this node), or
    start a local Ray."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Save the experiment state often (default: every ~10 s at best), so a driver killed right
    # after a trial finished does not rerun that trial on resume; cheap at our trial sizes.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address or None, include_dashboard=False, log_to_driver=True,
             configure_logging=True, logging_level="WARNING")


def unused_gpus_note(sweep: SweepFile, cluster_resources: dict | None = None) -> str | None:
    """A note when the Ray cluster has GPUs but the sweep reserves none per trial. Ray (2.60)
    then leaves ``CUDA_VISIBLE_DEVICES`` alone (``ray._private.utils.set_visible_accelerator_ids``
    skips zero-GPU workers), so a trial on a GPU node trains on that node's first GPU, all of
    them on the same one, unaccounted, and a trial on a CPU-only node trains on the CPU.
    ``cluster_resources``: ``ray.cluster_resources()`` of the running Ray when not given."""
    if cluster_resources is None:
        import ray

        cluster_resources = ray.cluster_resources()
    gpus = cluster_resources.get("GPU", 0)
    if not gpus or sweep.resources.gpu:
        return None
    return (f"note: the Ray cluster has {gpus:g} GPU(s), but this sweep reserves none per trial (resources.gpu is 0): "
            f"Ray neither places trials by GPU nor shares the GPUs out, so trials on a GPU node all use its first GPU "
            f"and trials on a CPU-only node train on the CPU. Give each trial a share in the sweep file, e.g. "
            f"`resources: {{cpu: 1, gpu: 0.125}}` with `max_concurrent: 8` (docs/CLUSTER.md).")


def run_sweep(sweep: SweepFile, *, resume: bool | None = None):
    """Run (or resume) the sweep and return its ``ResultGrid``. ``resume=None`` resumes when
    the experiment already exists, so the same command finishes an interrupted sweep."""
    init_ray()
    exists = experiment_exists(sweep)
    if resume is None:
        resume = exists
    elif resume and not exists:
        raise FileNotFoundError(f"no experiment to resume at {experiment_path(sweep)}")
    if not resume:
        save_sweep(sweep)
    tuner = build_tuner(sweep, resume=resume)
    return tuner.fit()

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


def _search_space(sweep: SweepFile) -> dict:
    """Random/Optuna: grid → grid_search, choice/uniform/loguniform → Tune's samplers; dotted
    keys nested into the recipes."""
    from ray import tune

    make = {"grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    flat = {key: value if kind == "fixed" else make[kind](value) for key, (kind, value) in sweep.axes().items()}
    return resolved(nest(_trial_constants(sweep, flat)))


def _search_alg(sweep: SweepFile):
    """(search algorithm, param_space, trial names, the grid's points or None) for the sweep's search."""
    from trainables import tuning

    if sweep.search.algorithm == "grid":
        points = grid_points(sweep)
        varying = tuning.varying_keys(points)
        return (tuning.GridPoints(points), tuning.table_space(points, varying), tuning.TrialNames(varying, points),
                points)
    varying = [k for k, (kind, _) in sweep.axes().items() if kind != "fixed"]
    names = tuning.TrialNames(varying)
    if sweep.search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.TPESampler(seed=sweep.search.seed)
        return OptunaSearch(sampler=sampler), _search_space(sweep), names, None
    return None, _search_space(sweep), names, None  # random: Tune's BasicVariantGenerator


def _scheduler(sweep: SweepFile):
    from trainables import tuning

    s = sweep.search.scheduler
    if s is None:
        return tuning.CappedFIFO(sweep.max_concurrent)
    return tuning.CappedASHA(sweep.max_concurrent, time_attr="training_iteration", grace_period=s.grace_period,
                             max_t=s.max_t, reduction_factor=s.reduction_factor)


def trainable_for(sweep: SweepFile):
    """The sweep's function trainable with its per-trial resources (and checkpoint policy)."""
    from ray import tune

    from trainables import get_trainable

    fn = get_trainable(sweep.trainable)
    if sweep.trainable == "finetune":
        fn = tune.with_parameters(fn, checkpoint=sweep.checkpoint)
    return tune.with_resources(fn, {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})


def build_tuner(sweep: SweepFile, *, resume: bool = False):
    """A ``tune.Tuner`` for the sweep, or the restored one when its experiment exists and
    ``resume`` is set (finished trials are kept; unfinished and errored ones run again, within
    ``max_concurrent``: see :class:`trainables.tuning._ConcurrencyCap`)."""
    from ray import tune

    from trainables import console, hparams

    # Ray's own loggers and console output off: ours are in the run config (saved with it, so a
    # restored tuner has them too)
    os.environ.update({**hparams.DISABLE_RAY_LOGGERS, **console.CLASSIC_OUTPUT})
    trainable = trainable_for(sweep)
    path = experiment_path(sweep)
    if resume:
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=True)

    search_alg, space, names, points = _search_alg(sweep)
    sampled = sweep.search.algorithm == "optuna" or sweep.search.scheduler is not None
    tune_config = tune.TuneConfig(
        num_samples=sweep.num_trials() if sweep.search.algorithm == "grid" else sweep.search.num_samples,
        search_alg=search_alg,
        scheduler=_scheduler(sweep),
        metric=sweep.search.metric if sampled else None,
        mode=sweep.search.mode if sampled else None,
        max_concurrent_trials=sweep.max_concurrent,
        trial_name_creator=names.name,
        trial_dirname_creator=names.dirname,
        # one worker process runs trial after trial instead of re-importing torch/timm/Ray for
        # each (the saving: bench/overheads.py, BENCHMARKS.md)
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=sweep.name,
        storage_path=storage_uri(sweep.storage),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        # the trainables write TensorBoard images into the trial's working directory, which Ray
        # copies to the trial folder in storage only with artifact syncing on
        sync_config=tune.SyncConfig(sync_artifacts=True),
        callbacks=hparams.logger_callbacks(sweep, points),
        progress_reporter=console.progress_reporter(sweep, names.varying),
        verbose=1,
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def experiment_exists(sweep: SweepFile) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(experiment_path(sweep))


def _storage_file(sweep: SweepFile, name: str):
    """(pyarrow filesystem, path) of a file in the experiment folder: a local folder, ``file://``,
    ``s3://`` or ``gs://`` alike (the filesystem Tune itself writes the experiment with)."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path(sweep))
    return fs, f"{root.rstrip('/')}/{name}"


def _read_saved_sweep(sweep: SweepFile) -> dict | None:
    import pyarrow.fs

    fs, path = _storage_file(sweep, SWEEP_COPY)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        raw = f.read()
    try:
        saved = yaml.safe_load(raw.decode())
        damage = None if isinstance(saved, dict) else f"it holds a {type(saved).__name__}, not a sweep"
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        damage = str(e).splitlines()[0]
    if damage:
        from spectral_ray.cli import UserError

        raise UserError(f"the saved copy of the sweep {experiment_path(sweep)}/{SWEEP_COPY} is damaged ({damage}); "
                        f"it records which sweep made this experiment, to compare before resuming. Delete it to "
                        f"resume without that check (this run saves the current sweep there), or pass "
                        f"--name NEW_NAME for a new experiment.")
    return saved


def check_same_sweep(sweep: SweepFile) -> str | None:
    """None when the experiment in storage was made by the same sweep (so resuming is safe), else
    a message saying what differs. Works for bucket storage too (``s3://``, ``gs://``)."""
    before = _read_saved_sweep(sweep)
    if before is None:
        return None
    from trainables.tuning import changed_keys

    diff = changed_keys(before, sweep.model_dump(mode="json"))
    return None if not diff else f"the sweep file changed since that experiment started (keys: {'; '.join(diff)})"


def save_sweep(sweep: SweepFile) -> None:
    fs, path = _storage_file(sweep, SWEEP_COPY)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False).encode())


def init_ray() -> None:
    """Join a running cluster (RAY_ADDRESS, or one started with ``ray start`` on this node), or
    start a local Ray."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address or None, include_dashboard=False, log_to_driver=True,
             configure_logging=True, logging_level="WARNING")


def experiment_state_period(sweep: SweepFile) -> str | None:
    """``TUNE_GLOBAL_CHECKPOINT_S`` for the sweep: every 2 s on a local/shared folder, so a
    driver killed right after a trial finished does not rerun it on resume (cheap: a local
    write); on bucket storage Ray's own adaptive default (≥ 10 s, longer when an upload is
    slow), not an upload of the experiment state back to back."""
    local = "://" not in sweep.storage or sweep.storage.startswith("file://")
    return "2" if local else None


# What `ray up` leaves on the head node: the cluster file as prepared (node types and their resources).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def declared_gpu_node_types(path: str | os.PathLike = BOOTSTRAP_CONFIG) -> dict[str, float]:
    """{node type: GPUs per node} of the cluster file ``ray up`` started this head with (none
    without one): an autoscaling cluster has 0 GPUs until a trial asks for one."""
    path = Path(path).expanduser()
    if not path.is_file():
        return {}
    types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types") or {}
    return {name: float(t["resources"]["GPU"]) for name, t in types.items()
            if (t.get("resources") or {}).get("GPU")}


def unused_gpus_note(sweep: SweepFile, cluster_resources: dict | None = None,
                     gpu_node_types: dict[str, float] | None = None) -> str | None:
    """A note when the Ray cluster has GPUs, or its cluster file declares GPU node types, but the
    sweep reserves none per trial. Ray (2.60) then leaves ``CUDA_VISIBLE_DEVICES`` alone
    (``ray._private.utils.set_visible_accelerator_ids`` skips zero-GPU workers), so a trial on a
    GPU node trains on that node's first GPU, all of them on the same one, unaccounted; and an
    autoscaler counts only their CPUs (with GPU-only worker types it still starts GPU nodes).
    ``cluster_resources``: ``ray.cluster_resources()`` of the running Ray when not given;
    ``gpu_node_types``: :func:`declared_gpu_node_types` when not given."""
    if sweep.resources.gpu:
        return None
    if cluster_resources is None:
        import ray

        cluster_resources = ray.cluster_resources()
    if gpu_node_types is None:
        gpu_node_types = declared_gpu_node_types()
    gpus = cluster_resources.get("GPU", 0)
    if gpus:
        where = f"the Ray cluster has {gpus:g} GPU(s)"
    elif gpu_node_types:
        where = f"the cluster file declares GPU node types ({', '.join(sorted(gpu_node_types))})"
    else:
        return None
    return (f"note: {where}, but this sweep reserves none per trial (resources.gpu is 0): Ray neither places "
            f"trials by GPU nor shares the GPUs out, so trials on a GPU node all use its first GPU, trials on a "
            f"CPU-only node train on the CPU, and an autoscaler sizes the cluster by their CPUs alone. Give each trial a share, "
            f"e.g. `--set resources.gpu=0.125 --set max_concurrent=8` (docs/CLUSTER.md).")


def run_sweep(sweep: SweepFile, *, resume: bool | None = None):
    """Run (or resume) the sweep and return its ``ResultGrid``. ``resume=None`` resumes when
    the experiment already exists, so the same command finishes an interrupted sweep."""
    from trainables import driver_lock, preflight

    init_ray()
    period = experiment_state_period(sweep)
    if period:
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", period)
    with driver_lock.hold(experiment_path(sweep)):  # one driver per experiment (trainables/driver_lock.py)
        exists = experiment_exists(sweep)
        if resume is None:
            resume = exists
        elif resume and not exists:
            raise FileNotFoundError(f"no experiment to resume at {experiment_path(sweep)}")
        if not resume or _read_saved_sweep(sweep) is None:
            save_sweep(sweep)
        preflight.run(sweep, experiment_path(sweep), store_path(sweep))  # every node, before any trial
        tuner = build_tuner(sweep, resume=resume)
        return tuner.fit()

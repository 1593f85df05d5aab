"""``spectral-ray validate FILE`` and ``spectral-ray sweep FILE``."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    v = sub.add_parser("validate", help="check a sweep file without starting Ray",
                       description="Check a sweep file (keys, types, ranges, names, storage) without starting Ray.")
    v.add_argument("file", type=Path)
    _common(v)
    v.set_defaults(func=validate)

    s = sub.add_parser("sweep", help="run a sweep file as Ray Tune trials",
                       description="Run a sweep file as Ray Tune trials. Re-running the same command resumes "
                       "an interrupted experiment: finished trials are kept, the rest run.")
    s.add_argument("file", type=Path)
    _common(s)
    s.add_argument("--resume", action="store_true", help="resume the existing experiment (error if there is none)")
    s.set_defaults(func=sweep)


def _common(p) -> None:
    p.add_argument("--storage", help="results folder or URI (overrides the file's `storage`)")
    p.add_argument("--name", help="experiment name (overrides the file's `name`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set size=32 --set finetune.epochs=1 "
                        "(VALUE is YAML: a list or {grid: [...]} works too), or a sweep setting: "
                        "--set resources.gpu=0.125 --set max_concurrent=8 --set checkpoint=full; repeatable")


def _load(args):
    import yaml

    from spectral_ray.cli import UserError
    from spectral_ray.config import SweepError, SweepFile, load_sweep

    overrides = {"storage": args.storage, "name": args.name}
    params = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: {value!r} is not a YAML value") from None
        head = key.partition(".")[0]
        if head in SweepFile.model_fields and head not in ("params", "name", "storage"):
            # a sweep setting at any depth (resources.gpu, max_concurrent, search.scheduler.grace_period …)
            *parents, leaf = key.split(".")
            node = overrides
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise UserError(f"--set {key}: `{part}` is set to a value by an earlier --set")
            node[leaf] = value
        else:
            params[key.removeprefix("params.")] = value
    try:
        return load_sweep(args.file, overrides=overrides, param_overrides=params)
    except SweepError as e:
        raise UserError(str(e)) from None


def validate(args) -> int:
    from spectral_ray.cli.estimate import describe, estimate

    sweep = _load(args)
    print(f"{args.file}: ok — trainable `{sweep.trainable}`, {sweep.search.algorithm} search, "
          f"results in {sweep.storage}/{sweep.name}")
    print(describe(estimate(sweep)))
    return 0


def sweep(args) -> int:
    from spectral_ray.cli import UserError

    sweep = _load(args)
    from trainables import launcher

    from spectral_ray import store

    launcher.init_ray()
    note = launcher.unused_gpus_note(sweep)
    if note:
        print(note, file=sys.stderr)
    if launcher.experiment_exists(sweep):
        changed = launcher.check_same_sweep(sweep)
        if changed:
            raise UserError(f"an experiment named {sweep.name!r} already exists at {launcher.experiment_path(sweep)} "
                            f"and {changed}. Use --name NEW_NAME for a new experiment, or restore the old value "
                            f"(in the file, or for this run with --set KEY=OLD_VALUE).")
        print(f"resuming the existing experiment at {launcher.experiment_path(sweep)} (finished trials are kept)")
        resume = True
    else:
        if args.resume:
            raise UserError(f"--resume: no experiment to resume at {launcher.experiment_path(sweep)}")
        resume = False
    store_root = launcher.store_path(sweep)
    before = store.stats(store_root)["trainings"] if store_root else 0
    results = launcher.run_sweep(sweep, resume=resume)
    statuses = {}
    for r in results:
        status = "ERROR" if r.error else "TERMINATED"
        statuses[status] = statuses.get(status, 0) + 1
    path = launcher.experiment_path(sweep)
    print()
    print(f"experiment: {path}")
    print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    if store_root:
        st = store.stats(store_root)
        print(f"backbone store: {store_root} — {st['backbones']} backbone(s); pretrainings in this run: "
              f"{st['trainings'] - before}; retrained keys: {len(st['retrained'])}")
    if sweep.search.algorithm == "optuna" and sweep.search.metric:
        try:
            best = results.get_best_result(metric=sweep.search.metric, mode=sweep.search.mode)
            # the trial's folder name: the name the progress table and TensorBoard show
            print(f"best {sweep.search.metric} = {best.metrics.get(sweep.search.metric):.4f}: trial "
                  f"{Path(best.path).name}")
        except (RuntimeError, KeyError, ValueError) as e:  # no trial reported the metric
            print(f"no best trial: {e}", file=sys.stderr)
    print(f"TensorBoard: tensorboard --logdir {path}   (binds to localhost)")
    print(f"report:      spectral-ray report {path}")
    return 0

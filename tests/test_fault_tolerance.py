"""Fault tolerance: failing trials are retried per the sweep's `max_failures` and then marked
ERROR while the others finish; a driver killed with SIGKILL mid-sweep is finished by re-running
(`--resume`) without rerunning finished trials or duplicating any; partially written backbone and
dataset-cache files are detected and rebuilt, never loaded."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from raynodes import CLI, TINY, env, final_row, kill_mentioning, pids_mentioning, rows, run_cli, short_tmpdir, trial_dirs

DIVERGENT = {"finetune.lr": 1e12, "finetune.optimizer": "sgd", "finetune.momentum": 0.0}


@pytest.fixture
def raytmp():
    """RAY_TMPDIR for the driver's own local Ray: everything it starts is found (and, at the end,
    killed) by this folder in its command line."""
    d = short_tmpdir("sr-ft-")
    try:
        yield d
    finally:
        left = kill_mentioning(str(d))
        import shutil

        shutil.rmtree(d, ignore_errors=True)
        assert not left, f"Ray processes left: {left}"


def write_sweep(path: Path, **sweep) -> Path:
    path.write_text(yaml.safe_dump(sweep))
    return path


def trial_states(exp: Path) -> dict[str, str]:
    """{trial folder name: status} as the driver last saved it (experiment_state-*.json)."""
    states = {}
    for f in sorted(exp.glob("experiment_state-*.json")):
        try:
            data = json.loads(f.read_text())
        except ValueError:
            continue  # being rewritten
        for trial_json, _ in data.get("trial_data", []):
            t = json.loads(trial_json)
            states[t["relative_logdir"]] = t["status"]
    return states


# ----------------------------------------------------------------------------- (a) retries


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_failing_trials_are_retried_then_marked_error(tmp_path, raytmp):
    """Every trial fails its first attempt (trainables/faults.py's fail-once wrapper) and is retried once
    (max_failures: 1): the two sound ones then finish; the divergent one (lr 1e12 really raises
    DivergenceError) fails its retry too and ends ERROR after exactly two attempts."""
    markers = tmp_path / "markers"
    markers.mkdir()
    sweep = write_sweep(
        tmp_path / "retry.yaml", name="retry", storage=str(tmp_path / "results"), resources={"cpu": 1},
        max_concurrent=2, max_failures=1,
        params={**TINY, "source": "natural",
                "run": {"cases": [{"degradation": 0}, {"degradation": 1}, {"degradation": 0.5, **DIVERGENT}]}})
    proc = run_cli("sweep", sweep, timeout=220, RAY_TMPDIR=raytmp, SPECTRAL_RAY_TEST_FAIL_ONCE=markers)
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert "trials: 1 ERROR, 2 TERMINATED" in proc.stdout, out
    assert len(list(markers.iterdir())) == 3  # each trial's first attempt failed

    trials = trial_dirs(tmp_path / "results" / "retry")
    assert len(trials) == 3
    by_lr = {json.loads((t / "params.json").read_text())["finetune"]["lr"]: t for t in trials}
    bad = by_lr.pop(1e12)
    for t in by_lr.values():  # retried, then finished
        assert final_row(t) is not None
        assert "injected failure" in (t / "error.txt").read_text()
    assert final_row(bad) is None
    errors = (bad / "error.txt").read_text()
    assert "injected failure" in errors and "DivergenceError" in errors
    assert errors.count("Failure #") == 2, errors  # first attempt + one retry, no more
    assert set(trial_states(tmp_path / "results" / "retry").values()) == {"TERMINATED", "ERROR"}


# ---------------------------------------------------------------------- (b) driver killed


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_driver_killed_mid_sweep_then_resumed(tmp_path, raytmp):
    results = tmp_path / "results"
    exp = results / "killed"
    sweep = write_sweep(
        tmp_path / "killed.yaml", name="killed", storage=str(results), resources={"cpu": 1}, max_concurrent=1,
        params={**TINY, "source": "natural", "degradation": {"grid": [0, 0.2, 0.5, 1]}, "fold": {"grid": [0, 1]},
                "finetune.epochs": 3})  # 8 trials of a few seconds each: long enough to be killed mid-way
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([*CLI, "sweep", str(sweep)], stdout=log, stderr=subprocess.STDOUT,
                              env=env(RAY_TMPDIR=raytmp), start_new_session=True)
    try:
        # wait until the driver has saved at least one finished trial in its experiment state
        deadline = time.time() + 200
        while time.time() < deadline and driver.poll() is None:
            if exp.is_dir() and "TERMINATED" in trial_states(exp).values():
                break
            time.sleep(0.5)
        assert driver.poll() is None, "the sweep ended before it could be killed: " + (tmp_path / "driver.log").read_text()[-3000:]
        assert "TERMINATED" in trial_states(exp).values(), "no trial finished in time"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        log.close()
    states = trial_states(exp)
    finished = {}
    for t in trial_dirs(exp):
        if states.get(t.name) == "TERMINATED":
            finished[t.name] = ((t / "result.json").read_bytes(), (t / "result.json").stat().st_mtime_ns)
    assert 1 <= len(finished) < 8, states

    # The killed driver's local Ray dies with it (its processes share the driver's fate): wait
    # briefly for them to exit, then make sure (kill what is left, found by RAY_TMPDIR).
    deadline = time.time() + 30
    while pids_mentioning(str(raytmp)) and time.time() < deadline:
        time.sleep(0.5)
    left_behind = pids_mentioning(str(raytmp))
    kill_mentioning(str(raytmp))

    proc = run_cli("sweep", sweep, "--resume", timeout=200, RAY_TMPDIR=raytmp)
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert "resuming the existing experiment" in proc.stdout and "trials: 8 TERMINATED" in proc.stdout, out
    assert "pretrainings in this run: 0" in proc.stdout  # the backbone survived the kill

    trials = trial_dirs(exp)
    assert len(trials) == 8, [t.name for t in trials]  # the grid, no duplicate trials
    configs = [(p["degradation"], p["fold"]) for p in (json.loads((t / "params.json").read_text()) for t in trials)]
    assert sorted(configs) == [(d, f) for d in (0, 0.2, 0.5, 1) for f in (0, 1)]
    for t in trials:
        assert final_row(t) is not None
        assert sum(1 for r in rows(t) if r.get("done") and "iid_auc" in r) == 1, t.name  # one final report
    for name, (content, mtime) in finished.items():  # finished trials were not run again
        f = exp / name / "result.json"
        assert f.read_bytes() == content and f.stat().st_mtime_ns == mtime, name

    # and the same command again: nothing left to run, nothing rewritten
    proc = run_cli("sweep", sweep, timeout=120, RAY_TMPDIR=raytmp)
    assert proc.returncode == 0 and "trials: 8 TERMINATED" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(trial_dirs(exp)) == 8
    for name, (content, mtime) in finished.items():
        assert (exp / name / "result.json").stat().st_mtime_ns == mtime
    assert not left_behind, f"the killed driver left Ray processes running: {left_behind}"


# -------------------------------------------------------------- (c) partially written files


def test_partial_dataset_cache_file_is_rebuilt_never_loaded(tmp_path, monkeypatch):
    from spectral_ray.data import cache
    from spectral_ray.data.registry import ImageDataset

    monkeypatch.setenv("SPECTRAL_RAY_CACHE", str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        rng = np.random.default_rng(len(builds))
        return ImageDataset(images=rng.random((8, 1, 8, 8), dtype=np.float32), labels=np.arange(8) % 2,
                            classes=["a", "b"], groups=np.arange(8))

    first = cache.load_or_build("t", {"n": 8}, build, code="test")
    (path,) = tmp_path.glob("t-*.npz")
    data = path.read_bytes()

    # a crash mid-write can only leave a .tmp (writes go to a temporary name, then os.replace);
    # a file truncated anyway (disk full, a copy cut short) is refused by the zip reader or the
    # checksum, and rebuilt
    for broken in (data[: len(data) // 2], data[:-7], data[:100], b""):
        path.write_bytes(broken)
        assert cache.load_arrays(path) is None
        n = len(builds)
        ds = cache.load_or_build("t", {"n": 8}, build, code="test")
        assert len(builds) == n + 1  # rebuilt, not loaded
        assert cache.load_arrays(path) is not None  # and the file is whole again
        assert ds.images.shape == first.images.shape

    # bytes flipped inside an array (same length, valid zip directory): the checksum catches it
    data = path.read_bytes()
    i = data.index(b"NUMPY", data.index(b"images")) + 200
    path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    assert cache.load_arrays(path) is None
    n = len(builds)
    cache.load_or_build("t", {"n": 8}, build, code="test")
    assert len(builds) == n + 1


def test_dataset_cache_crash_during_write_leaves_no_loadable_file(tmp_path, monkeypatch):
    from spectral_ray.data import cache

    target = tmp_path / "x.npz"
    real_savez = np.savez

    def crash(f, **arrays):  # write a part, then die as a crash would
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.save_arrays(target, {"a": np.ones(1000)}, {})
    assert not target.exists() and not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()

    # a leftover .tmp from a process killed with SIGKILL (no cleanup ran) is never read as the file
    (tmp_path / "x.npz12345.tmp").write_bytes(b"PK\x03\x04 partial")
    assert cache.load_arrays(target) is None
    cache.save_arrays(target, {"a": np.ones(3)}, {"k": 1})
    arrays, meta = cache.load_arrays(target)
    assert meta["k"] == 1 and arrays["a"].tolist() == [1, 1, 1]


def test_backbone_crash_during_write_is_rebuilt(tmp_path):
    """A writer killed mid-save leaves a .tmp and no done marker: the next caller deletes the
    leftover and trains again; it never loads the partial file. (tests/test_store.py covers a
    truncated backbone.pt and a missing meta.json.)"""
    import torch

    from spectral_ray.store import PretrainConfig, entry_dir, get_or_train, stats
    from spectral_ray.training import Recipe

    trained = []

    cfg = PretrainConfig(source="natural", source_params={"size": 8, "n": 4}, model="test", recipe=Recipe(epochs=1))

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2, 2)

    def tiny():
        trained.append(1)
        return Tiny(), {"classes": ["a", "b"]}

    d = entry_dir(cfg, tmp_path)
    d.mkdir(parents=True)
    # what a SIGKILL during save_backbone leaves: a partial temporary file, no backbone.pt, no meta.json
    (d / "backbone.pt.abc123.tmp").write_bytes(b"PK\x03\x04" + os.urandom(100))
    path = get_or_train(cfg, root=tmp_path, train_fn=lambda c: tiny())
    assert len(trained) == 1 and not list(d.glob("*.tmp"))
    # killed after backbone.pt was replaced but before meta.json: not done, so rebuilt
    (d / "meta.json").unlink()
    get_or_train(cfg, root=tmp_path, train_fn=lambda c: tiny())
    assert len(trained) == 2
    # a torn meta.json (not JSON) is not a done marker either
    (d / "meta.json").write_text('{"key": "')
    get_or_train(cfg, root=tmp_path, train_fn=lambda c: tiny())
    assert len(trained) == 3
    # a complete entry is a hit
    assert get_or_train(cfg, root=tmp_path, train_fn=lambda c: tiny()) == path and len(trained) == 3
    assert stats(tmp_path)["per_key"] == {cfg.key(): 3}

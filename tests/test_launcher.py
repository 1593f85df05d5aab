"""Where a sweep's trials keep their backbones (no Ray started)."""

from pathlib import Path

import pytest

from spectral_ray.config import parse_sweep
from trainables.launcher import grid_points, store_path


def _sweep(tmp_path, storage=None, **params):
    raw = {"name": "s", "storage": storage or str(tmp_path / "results"), "params": {"fold": {"grid": [0, 1]}, **params}}
    return parse_sweep(raw, "inline", check_storage=False)


def test_store_defaults_to_beside_the_results(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRAL_RAY_STORE", raising=False)
    sweep = _sweep(tmp_path)
    assert store_path(sweep) == str(tmp_path / "results" / "backbones")
    assert {p["store"] for p in grid_points(sweep)} == {str(tmp_path / "results" / "backbones")}


def test_store_environment_variable_is_honoured(tmp_path, monkeypatch):
    # a cluster exports it for a store shared by every sweep (docs/CLUSTER.md)
    monkeypatch.setenv("SPECTRAL_RAY_STORE", str(tmp_path / "shared"))
    sweep = _sweep(tmp_path)
    assert store_path(sweep) == str(tmp_path / "shared")
    assert {p["store"] for p in grid_points(sweep)} == {str(tmp_path / "shared")}
    assert store_path(_sweep(tmp_path, "s3://bucket/x")) == str(tmp_path / "shared")


def test_store_in_the_sweep_file_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_RAY_STORE", str(tmp_path / "shared"))
    sweep = _sweep(tmp_path, store=str(tmp_path / "mine"))
    assert store_path(sweep) == str(tmp_path / "mine")
    assert {p["store"] for p in grid_points(sweep)} == {str(tmp_path / "mine")}


def test_uri_storage_without_variable_leaves_the_store_to_each_worker(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRAL_RAY_STORE", raising=False)
    assert store_path(_sweep(tmp_path, "s3://bucket/x")) is None


def test_note_when_the_cluster_has_gpus_the_sweep_does_not_reserve(tmp_path):
    from trainables.launcher import unused_gpus_note

    cpu_only = _sweep(tmp_path)
    note = unused_gpus_note(cpu_only, {"CPU": 16.0, "GPU": 1.0})
    assert note and "1 GPU(s)" in note and "resources" in note
    assert unused_gpus_note(cpu_only, {"CPU": 2.0}) is None  # no GPUs: nothing to say
    raw = {"name": "s", "storage": str(tmp_path), "resources": {"cpu": 1, "gpu": 0.25}, "params": {"fold": 0}}
    assert unused_gpus_note(parse_sweep(raw, "inline", check_storage=False), {"GPU": 1.0}) is None


def test_note_when_the_cluster_file_declares_gpu_node_types(tmp_path):
    """An autoscaling cluster has 0 GPUs at launch: the head's bootstrap config says what it may add."""
    import yaml

    from trainables.launcher import declared_gpu_node_types, unused_gpus_note

    boot = tmp_path / "ray_bootstrap_config.yaml"
    boot.write_text(yaml.safe_dump({"available_node_types": {
        "head": {"resources": {"CPU": 0}}, "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}}}}))
    assert declared_gpu_node_types(boot) == {"gpu_worker": 1.0}
    assert declared_gpu_node_types(tmp_path / "absent.yaml") == {}
    note = unused_gpus_note(_sweep(tmp_path), {"CPU": 0.0}, declared_gpu_node_types(boot))
    assert note and "gpu_worker" in note and "--set resources.gpu=" in note
    assert unused_gpus_note(_sweep(tmp_path), {"CPU": 0.0}, {}) is None


def test_changed_sweep_is_caught_on_uri_storage(tmp_path):
    """The guard reads the saved sweep through pyarrow, as Tune writes a bucket: a file:// URI
    stands in for s3:// / gs://."""
    from trainables.launcher import check_same_sweep, save_sweep

    uri = f"file://{tmp_path}/bucket"
    raw = {"name": "s", "storage": uri, "params": {"fold": {"grid": [0, 1]}}}
    sweep = parse_sweep(raw, "inline", check_storage=False)
    assert check_same_sweep(sweep) is None  # nothing saved yet
    save_sweep(sweep)
    assert (tmp_path / "bucket" / "s" / "sweep.yaml").exists()
    assert check_same_sweep(sweep) is None
    changed = parse_sweep({**raw, "params": {"fold": {"grid": [0, 1, 2]}}}, "inline", check_storage=False)
    assert "keys: params" in check_same_sweep(changed)


def test_experiment_state_saved_often_only_on_local_storage(tmp_path):
    from trainables.launcher import experiment_state_period

    assert experiment_state_period(_sweep(tmp_path)) == "2"
    assert experiment_state_period(_sweep(tmp_path, f"file://{tmp_path}")) == "2"
    assert experiment_state_period(_sweep(tmp_path, "s3://bucket/x")) is None  # Ray's adaptive default


def test_grid_points_searcher_suggests_each_point_once_across_a_restore(tmp_path):
    from ray.tune.search import Searcher

    from trainables.tuning import GridPoints

    points = [{"fold": 0}, {"fold": 1}, {"fold": 2}]
    g = GridPoints(points)
    assert g.suggest("a") == {"fold": 0}
    g.save(str(tmp_path / "state.pkl"))
    again = GridPoints(points)
    again.restore(str(tmp_path / "state.pkl"))
    assert [again.suggest("b"), again.suggest("c"), again.suggest("d")] == [{"fold": 1}, {"fold": 2}, Searcher.FINISHED]
    other = GridPoints(points[:2])
    import pytest

    with pytest.raises(ValueError, match="3 points"):
        other.restore(str(tmp_path / "state.pkl"))


def test_trial_names_say_the_grid_point(tmp_path):
    from trainables.launcher import grid_points
    from trainables.tuning import TrialNames, table_space, varying_keys

    raw = {"name": "s", "storage": str(tmp_path), "params": {
        "source": {"grid": ["natural", "medical"]}, "edit_strength": {"grid": [0, 1.0]}, "edit": "band_gain",
        "shortcut": {"cases": [{"artifact_omega": 0.25, "artifact_amplitude": 0.1},
                               {"artifact_omega": 0.75, "artifact_amplitude": 0.2}]},
        "degradation": {"grid": [0, 0.5]}, "fold": {"grid": [0, 1]}, "finetune.lr": {"grid": [0.001, 0.002]}}}
    points = grid_points(parse_sweep(raw, "inline", check_storage=False))
    varying = varying_keys(points)
    assert varying == ["source", "edit", "edit_strength", "artifact_omega", "artifact_amplitude", "degradation",
                       "fold", "finetune.lr"]
    names = TrialNames(varying, points)
    labels = sorted(names.label(p) for p in points)
    assert len(set(labels)) == len(points) == 64
    assert "natural-band_gain-s1-w0.75-a0.2-d0.5-f0-lr0.002" in labels
    assert "medical-none-s0-w0.25-a0.1-d0-f1-lr0.001" in labels
    space = table_space(points, varying)
    assert sorted(space["source"].categories) == ["medical", "natural"]
    assert space["finetune"]["lr"].categories == [0.001, 0.002] and space["finetune"]["epochs"] == points[0]["finetune"]["epochs"]


def test_clashing_labels_get_a_suffix():
    from trainables.tuning import TrialNames

    # a path is not a name: two points differing only in one get -2
    points = [{"source": "none", "source_weights": "file:/w/a.pth"}, {"source": "none", "source_weights": "file:/w/b.pth"}]
    names = TrialNames(["source", "source_weights"], points)
    assert [names.label(p) for p in points] == ["none", "none-2"]


def test_trial_names_pickle_small_whatever_the_grid():
    """Tune stores the name creators in every trial's entry of the experiment state: their size
    must not grow with the grid (it once held a table of all points: O(trials²) bytes)."""
    import pickle

    from trainables.tuning import TrialNames

    points = [{"source": "natural", "fold": f, "seed": s, "store": "/a/long/path/" * 8} for f in range(30) for s in range(12)]
    names = TrialNames(["fold", "seed"], points)
    assert len({names.label(p) for p in points}) == 360
    assert len(pickle.dumps(names)) < 1000


def test_scheduler_cap_parks_trials_beyond_max_concurrent():
    """Restored trials arrive PENDING straight into the controller (Ray #40652): the cap parks the
    ones beyond max_concurrent as PAUSED and hands them back one at a time as slots free."""
    from ray.tune.experiment import Trial

    from trainables.tuning import CappedFIFO

    class FakeTrial:
        def __init__(self, status):
            self.status = status

        def set_status(self, status):
            self.status = status

    class FakeController:
        def __init__(self):
            self.trials = []

        def get_trials(self):
            return self.trials

    cap, ctl = CappedFIFO(max_concurrent=2), FakeController()
    for _ in range(5):  # five restarted errored trials
        t = FakeTrial(Trial.PENDING)
        ctl.trials.append(t)
        cap.on_trial_add(ctl, t)
    assert [t.status for t in ctl.trials] == [Trial.PENDING] * 2 + [Trial.PAUSED] * 3
    assert cap.choose_trial_to_run(ctl) is ctl.trials[0]  # pending ones first, as FIFO does
    for t in ctl.trials[:2]:
        t.status = Trial.RUNNING
    assert cap.choose_trial_to_run(ctl) is None  # both slots busy
    ctl.trials[0].status = Trial.TERMINATED
    assert cap.choose_trial_to_run(ctl) is ctl.trials[2]  # one slot free: the first parked trial
    assert CappedFIFO(max_concurrent=None).choose_trial_to_run(ctl) is ctl.trials[2]


@pytest.mark.parametrize("damage", [b"name: s\nparams: {fold: [0,\n", b"just a string\n", b"\xff\xfe\x00binary"])
def test_a_damaged_saved_sweep_is_named_with_its_path_and_the_fix(tmp_path, damage):
    from spectral_ray.cli import UserError
    from trainables.launcher import SWEEP_COPY, check_same_sweep, experiment_path, save_sweep

    sweep = _sweep(tmp_path)
    save_sweep(sweep)
    saved = Path(experiment_path(sweep)) / SWEEP_COPY
    saved.write_bytes(damage)
    with pytest.raises(UserError) as e:
        check_same_sweep(sweep)
    msg = str(e.value)
    assert f"{saved}" in msg and "is damaged" in msg and "Delete it" in msg and "--name NEW_NAME" in msg
    saved.unlink()
    assert check_same_sweep(sweep) is None

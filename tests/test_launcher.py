"""Where a sweep's trials keep their backbones (no Ray started)."""

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

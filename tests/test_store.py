"""Pretrain-once store: keys, one training per config across processes, corruption rebuilds."""

import json
import multiprocessing as mp
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from spectral_ray.models import read_backbone
from spectral_ray.store import PretrainConfig, get_or_train, load_meta, stats
from spectral_ray.training import Recipe

MARKERS = "SPECTRAL_RAY_TEST_MARKERS"
ARRIVALS, EXPECTED = "SPECTRAL_RAY_TEST_ARRIVALS", "SPECTRAL_RAY_TEST_EXPECTED"


# This module is imported by the spawned workers too: it keeps its top-level imports light (no
# timm, no dataset generators) so that a worker starts in seconds on a busy machine.


def _register_tiny_source():
    from spectral_ray.data import ImageDataset, register_dataset

    @register_dataset("_store_test_source", kind="source", cached=False)
    def _tiny_source(size=16, channels=1, n=60, seed=0):
        """Tiny 3-class source for store tests: class c has a bright band at row block c."""
        rng = np.random.default_rng(seed)
        y = (np.arange(n) % 3).astype(np.int64)
        x = rng.random((n, channels, size, size)).astype(np.float32) * 0.5
        for c in range(3):
            x[y == c, :, c * size // 3 : (c + 1) * size // 3, :] += 0.5
        return ImageDataset(images=x, labels=y, classes=["a", "b", "c"])


class TinyNet(torch.nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def fake_train(config):
    """Stands in for pretraining: leaves a marker per call; when callers announced themselves
    (ARRIVALS), holds the lock until all of them are waiting on it, so the race is real."""
    Path(os.environ[MARKERS], f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    arrivals, expected = os.environ.get(ARRIVALS), int(os.environ.get(EXPECTED, "0"))
    deadline = time.time() + 60
    while arrivals and len(list(Path(arrivals).iterdir())) < expected and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the last arrival is now inside get_or_train, blocked on the lock
    torch.manual_seed(config.seed)
    return TinyNet(), {"epochs": [{"epoch": 1, "train_loss": 1.0}], "nan": float("nan")}


def _worker(config_dict, root, q):
    Path(os.environ[ARRIVALS], str(os.getpid())).touch()
    path = get_or_train(PretrainConfig.from_dict(config_dict), root=root, train_fn=fake_train)
    q.put(str(path))


def cfg(**kw):
    _register_tiny_source()  # a config's key hashes its source's code, so the source must be registered
    base = dict(source="_store_test_source", source_params={"size": 16, "channels": 1, "n": 60, "seed": 0},
                model="test_resnet", recipe=Recipe(epochs=1, batch_size=16), seed=0)
    base.update(kw)
    return PretrainConfig(**base)


def markers(d):
    return len(list(Path(d).iterdir()))


@pytest.fixture
def marker_dir(tmp_path, monkeypatch):
    d = tmp_path / "markers"
    d.mkdir()
    monkeypatch.setenv(MARKERS, str(d))
    return d


def test_key_is_stable_and_canonical():
    a = cfg()
    assert a.key() == cfg().key() == PretrainConfig.from_dict(json.loads(json.dumps(a.to_dict()))).key()
    assert len(a.key()) == 64
    assert cfg(recipe=Recipe(epochs=1, batch_size=16, num_threads=2)).key() == a.key()  # speed-only knob
    assert cfg(recipe=Recipe(epochs=1.0, batch_size=16)).key() == a.key()  # 1 == 1.0
    assert cfg(edit_family="band_gain", edit_strength=0.0, edit_params={"omega": 0.3}).key() == a.key()  # identity edit
    for other in (cfg(seed=1), cfg(model="resnet10t"), cfg(edit_family="band_gain", edit_strength=0.5),
                  cfg(recipe=Recipe(epochs=2, batch_size=16)), cfg(source_params={"size": 32})):
        assert other.key() != a.key()


def test_recipe_fields_added_later_change_the_key_only_when_set():
    base = cfg(recipe=Recipe(epochs=1, batch_size=16))
    for field in ("head_dropout", "affine_rotation_deg", "affine_zoom"):
        assert field not in base.canonical()["recipe"]  # at its default: the key of the backbones stored before it
    assert cfg(recipe=Recipe(epochs=1, batch_size=16, adam_eps=1e-8)).key() == base.key()
    assert cfg(recipe=Recipe(epochs=1, batch_size=16, head_dropout=0.5)).key() != base.key()
    assert cfg(recipe=Recipe(epochs=1, batch_size=16, affine_rotation_deg=10)).key() != base.key()


def test_from_dict_rejects_unknown_keys_naming_them():
    d = {**cfg().to_dict(), "sead": 1}
    with pytest.raises(TypeError, match=r"unknown pretraining config key\(s\) \['sead'\]; allowed: .*'seed'"):
        PretrainConfig.from_dict(d)


def test_concurrent_callers_train_once(tmp_path, marker_dir, monkeypatch):
    """Two spawned processes and this one ask for the same backbone at once: one trains (and
    holds the lock until the others are waiting), the others wait and reuse its file."""
    root = tmp_path / "store"
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    monkeypatch.setenv(ARRIVALS, str(arrivals))
    monkeypatch.setenv(EXPECTED, "3")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cfg().to_dict(), str(root), q)) for _ in range(2)]
    for p in procs:
        p.start()
    _worker(cfg().to_dict(), str(root), q)
    paths = [q.get(timeout=120) for _ in range(3)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert markers(marker_dir) == 1  # trained exactly once
    assert len(set(paths)) == 1
    s = stats(root)
    assert s["trainings"] == 1 and s["backbones"] == 1 and s["retrained"] == []
    meta = load_meta(paths[0])
    assert meta["trainings"] == 1 and meta["key"] == cfg().key() and meta["history"]["nan"] is None
    # and in this process: a hit, no training
    assert get_or_train(cfg(), root=root, train_fn=fake_train) == Path(paths[0])
    assert markers(marker_dir) == 1


def test_partial_or_corrupt_entries_are_rebuilt(tmp_path, marker_dir):
    root = tmp_path / "store"
    path = get_or_train(cfg(), root=root, train_fn=fake_train)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a partial file
    path2 = get_or_train(cfg(), root=root, train_fn=fake_train)
    assert path2 == path and markers(marker_dir) == 2
    read_backbone(path)  # valid again
    (path.parent / "meta.json").unlink()  # crashed before the done marker
    get_or_train(cfg(), root=root, train_fn=fake_train)
    assert markers(marker_dir) == 3
    s = stats(root)
    assert s["trainings"] == 3 and s["retrained"] == [cfg().key()] and s["entries"][0]["trainings"] == 3
    get_or_train(cfg(seed=1), root=root, train_fn=fake_train)
    assert stats(root)["backbones"] == 2


def test_root_from_env(tmp_path, marker_dir, monkeypatch):
    monkeypatch.setenv("SPECTRAL_RAY_STORE", str(tmp_path / "envstore"))
    path = get_or_train(cfg(), train_fn=fake_train)
    assert path.is_relative_to(tmp_path / "envstore")


def test_default_pretrain_end_to_end(tmp_path):
    from spectral_ray.models import create_model, load_backbone
    from spectral_ray.weights import load_pretrained

    _register_tiny_source()
    root = tmp_path / "store"
    seen = []
    config = cfg(recipe=Recipe(epochs=2, batch_size=16, lr=3e-3))
    path = get_or_train(config, root=root, on_epoch=seen.append)
    assert [e["epoch"] for e in seen] == [1, 2]
    meta = load_meta(path)
    h = meta["history"]
    assert h["n_train"] == 54 and h["n_val"] == 6 and h["classes"] == ["a", "b", "c"]
    p = np.array(h["learning_priority"])
    assert p.shape == (9,) and p.sum() == pytest.approx(1, abs=1e-5)
    assert 0 < h["priority_summary"]["centroid"] < 1 and "centroid" in h["priority_summary_nodc"]
    # fine-tuning start: a fresh 2-class head on the stored backbone
    m = load_pretrained("test_resnet", in_chans=1, num_classes=2, source="file", file=path)
    torch.manual_seed(0)
    m2 = create_model("test_resnet", num_classes=2)
    load_backbone(m2, path)
    assert torch.equal(m.conv1[0].weight, m2.conv1[0].weight)
    assert stats(root)["trainings"] == 1


def test_edited_source_reads_the_edited_dataset_with_its_own_seed(tmp_path, monkeypatch):
    import spectral_ray.editing as editing

    _register_tiny_source()
    calls = []
    real = editing.get_edited_dataset

    def spy(name, edit_family, strength, edit_params=None, seed=0, *, dataset_seed=None, **dataset_params):
        calls.append((name, edit_family, strength, edit_params, seed, dict(dataset_params, seed=dataset_seed)))
        return real(name, edit_family, strength, edit_params, seed, dataset_seed=dataset_seed, **dataset_params)

    monkeypatch.setattr(editing, "get_edited_dataset", spy)
    get_or_train(cfg(edit_family="band_gain", edit_strength=0.5, edit_params={"omega": 0.25}), root=tmp_path)
    assert calls == [("_store_test_source", "band_gain", 0.5, {"omega": 0.25}, 0,
                      {"size": 16, "channels": 1, "n": 60, "seed": 0})]
    get_or_train(cfg(), root=tmp_path)  # unedited: editing not consulted
    assert len(calls) == 1
    other = cfg(edit_family="band_gain", edit_strength=0.5, source_params={"size": 16, "channels": 1, "n": 60, "seed": 7})
    get_or_train(other, root=tmp_path)  # the source's own seed 7 reaches the dataset; the edit follows it
    assert calls[-1][4] == 7 and calls[-1][5]["seed"] == 7


def _rewrite_meta(path, **provenance):
    meta_path = path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["provenance"] = {**meta["provenance"], **provenance}
    meta_path.write_text(json.dumps(meta))


def test_backbone_records_its_code_and_libraries_and_other_code_is_refused(tmp_path, marker_dir, monkeypatch):
    from spectral_ray import store

    root = tmp_path / "store"
    path = get_or_train(cfg(), root=root, train_fn=fake_train)
    prov = load_meta(path)["provenance"]
    assert prov == store.training_provenance()
    assert {"spectral_ray.store", "spectral_ray.training", "spectral_ray.models"} <= set(prov["code"])
    assert prov["libraries"]["torch"] == torch.__version__.split("+")[0] or prov["libraries"]["torch"]
    assert get_or_train(cfg(), root=root, train_fn=fake_train) == path and markers(marker_dir) == 1  # same code: reused

    _rewrite_meta(path, code={**prov["code"], "spectral_ray.training": "0" * 12})
    with pytest.raises(store.StaleBackbone) as e:
        get_or_train(cfg(), root=root, train_fn=fake_train)
    msg = str(e.value)
    assert "code changed in spectral_ray.training" in msg and str(path.parent) in msg
    assert "delete that folder" in msg and "SPECTRAL_RAY_STORE_REUSE=1" in msg
    monkeypatch.setenv("SPECTRAL_RAY_STORE_REUSE", "1")  # the change does not alter pretraining: reuse
    assert get_or_train(cfg(), root=root, train_fn=fake_train) == path and markers(marker_dir) == 1
    monkeypatch.delenv("SPECTRAL_RAY_STORE_REUSE")

    _rewrite_meta(path, code=prov["code"], libraries={**prov["libraries"], "torch": "1.13.1"})
    with pytest.raises(store.StaleBackbone, match=r"libraries torch 1\.13\.1 \(now"):
        get_or_train(cfg(), root=root, train_fn=fake_train)
    patch = prov["libraries"]["torch"].split("+")[0].rsplit(".", 1)[0] + ".999"  # a patch release: same training
    _rewrite_meta(path, libraries={**prov["libraries"], "torch": patch})
    assert get_or_train(cfg(), root=root, train_fn=fake_train) == path


def test_entries_stored_before_provenance_are_still_reused(tmp_path, marker_dir):
    root = tmp_path / "store"
    path = get_or_train(cfg(), root=root, train_fn=fake_train)
    meta_path = path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["provenance"]
    meta_path.write_text(json.dumps(meta))
    assert get_or_train(cfg(), root=root, train_fn=fake_train) == path and markers(marker_dir) == 1


def test_checksummed_arrays_are_recomputed_when_damaged(tmp_path):
    from spectral_ray.store import load_array_checked, save_array_checked

    path = tmp_path / "probe_priority" / "abc.npy"
    assert load_array_checked(path) is None
    save_array_checked(path, np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(load_array_checked(path), np.arange(5, dtype=np.float32))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the values
    path.write_bytes(bytes(data))
    assert load_array_checked(path) is None and not path.exists()  # removed: the caller recomputes it
    save_array_checked(path, np.ones(3))
    path.write_bytes(path.read_bytes()[:40])  # truncated
    assert load_array_checked(path) is None
    np.save(path, np.ones(3))  # written before checksums existed: no .sha256, recomputed once
    assert load_array_checked(path) is None


def test_a_damaged_stored_probe_priority_is_recomputed_not_fatal(tmp_path):
    """experiment.stored_probe_priority reads the vector through the checksum: a damaged file
    beside the backbone is measured again (the same vector) instead of failing the trial."""
    from spectral_ray.experiment import ProbeSet, stored_probe_priority
    from spectral_ray.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet10t", in_chans=1, num_classes=2)
    rng = np.random.default_rng(0)
    probe = ProbeSet(rng.random((8, 1, 32, 32)).astype(np.float32), np.arange(8) % 2)
    ckpt = tmp_path / "entry" / "backbone.pt"
    ckpt.parent.mkdir()
    first = stored_probe_priority(model, probe, ckpt)
    (saved,) = (ckpt.parent / "probe_priority").glob("*.npy")
    assert saved.with_name(saved.name + ".sha256").exists()
    saved.write_bytes(saved.read_bytes()[:-8] + b"\0" * 8)  # damaged values, same size
    again = stored_probe_priority(model, probe, ckpt)
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(stored_probe_priority(model, probe, ckpt), first)  # the rewritten file reads back

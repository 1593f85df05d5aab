"""A real two-node Ray cluster on one machine: a head and a second node on loopback, each with
its own temp dir and one CPU, and a tiny sweep run against it through the same CLI a cluster
uses (``RAY_ADDRESS``, as ``ray submit``/``ray job submit`` of sweeps/launch.py does on a head
node). Trials must land on both nodes and share the backbone store (each backbone trained once).
The nodes are torn down in every case, by killing only the processes under the test's temp dir."""

import pytest
import yaml

from raynodes import (TINY, LoopbackCluster, final_row, pids_mentioning, run_cli, short_tmpdir, tensorboard_tags,
                      trial_dirs)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def cluster():
    c = LoopbackCluster()
    try:
        c.start_head()
        c.add_node()
        yield c
    finally:
        left = c.stop()
        assert not left, f"Ray processes left after teardown: {left}"


def test_sweep_runs_on_both_nodes_and_shares_the_store(cluster, tmp_path):
    results = short_tmpdir("sr-mn-res-")
    try:
        sweep = {"name": "multinode", "storage": str(results), "resources": {"cpu": 1},
                 "params": {**TINY, "source": {"grid": ["natural", "medical"]}, "degradation": {"grid": [0, 1]}}}
        path = tmp_path / "multinode.yaml"
        path.write_text(yaml.safe_dump(sweep))
        proc = run_cli("sweep", path, RAY_ADDRESS=cluster.address)
        out = proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.returncode == 0, out
        assert "trials: 4 TERMINATED" in proc.stdout, out

        trials = trial_dirs(results / "multinode")
        finals = [final_row(t) for t in trials]
        assert len(trials) == 4 and all(finals), out
        nodes = {f["node_id"] for f in finals}
        assert len(nodes) == 2, f"trials ran on {nodes}"
        # folder names say the grid point
        assert sorted(t.name for t in trials) == ["medical-d0", "medical-d1", "natural-d0", "natural-d1"]

        # every trial's TensorBoard output reached storage, from either node, on a fresh or a
        # reused worker: PSD images and the HParams entry (written in the trial's working dir)
        for t in trials:
            tags = tensorboard_tags(t)
            assert {"priority/probe_set", "priority/probe_set_over_epochs"} <= tags["images"], (t.name, tags["images"])
            assert "_hparams_/session_start_info" in tags["hparams"], t.name
            assert "final/ood_auc" in tags["scalars"], t.name

        # one store for both nodes: two backbones (natural, medical), each pretrained once, and
        # the two trials of each source used the same one
        from spectral_ray import store

        st = store.stats(results / "backbones")
        assert st["backbones"] == 2 and st["trainings"] == 2 and st["retrained"] == [], st
        assert "pretrainings in this run: 2; retrained keys: 0" in proc.stdout
        by_source = {}
        for t, f in zip(trials, finals):
            source = yaml.safe_load((t / "params.json").read_text())["source"]
            by_source.setdefault(source, set()).add(f["pretrain_key"])
        assert {k: len(v) for k, v in by_source.items()} == {"natural": 1, "medical": 1}
    finally:
        # the driver joined the cluster (no local Ray of its own): nothing of it may be left
        assert not pids_mentioning(str(results))
        import shutil

        shutil.rmtree(results, ignore_errors=True)

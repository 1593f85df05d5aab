"""The sweep's TensorBoard output as TensorBoard itself serves it: a tiny real sweep, the
``tensorboard`` package's own server on 127.0.0.1, and its HTTP API (the HParams plugin's
experiment and session-groups endpoints, the scalar and image tags)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from spectral_ray import tensorboard as tb

CLI = [sys.executable, "-m", "spectral_ray.cli"]
TINY = {"size": 32, "source_n": 200, "target_n": 160, "psd_images": 32, "pretrain.epochs": 1, "finetune.epochs": 2}
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _plugin_data(summary) -> bytes:
    return summary.value[0].metadata.plugin_data.content


def test_experiment_summary_types_domains_and_differs():
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    s = tb.experiment_summary({"degradation": [0, 0.5, 1], "edit_omega": [None, 0.3], "lr": (1e-4, 1e-2),
                               "fold": [0]}, ["iid_auc", "ood_auc"])
    exp = plugin_data_pb2.HParamsPluginData.FromString(_plugin_data(s)).experiment
    infos = {i.name: i for i in exp.hparam_infos}
    assert infos["degradation"].type == api_pb2.DATA_TYPE_FLOAT64 and infos["degradation"].differs
    assert [v.number_value for v in infos["degradation"].domain_discrete.values] == [0, 0.5, 1]
    # None beside numbers: one type for the whole domain, strings
    assert [v.string_value for v in infos["edit_omega"].domain_discrete.values] == ["None", "0.3"]
    assert infos["lr"].domain_interval.max_value == pytest.approx(1e-2) and infos["lr"].differs
    assert not infos["fold"].differs
    assert [m.name.tag for m in exp.metric_infos] == ["final/iid_auc", "final/ood_auc"]
    start = tb.session_start_summary({"edit_omega": None, "degradation": 0.5}, "t", {"edit_omega": [None, 0.3]})
    info = plugin_data_pb2.HParamsPluginData.FromString(_plugin_data(start)).session_start_info
    assert info.hparams["edit_omega"].string_value == "None" and info.hparams["degradation"].number_value == 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """TensorBoard serving ``logdir`` on 127.0.0.1 (the package's own server, in a thread)."""

    def __init__(self, logdir):
        from tensorboard import program

        self.board = program.TensorBoard()
        self.board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(_free_port()),
                                   "--reload_interval", "1"])
        self.url = self.board.launch()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=20) as r:
            return json.loads(r.read())

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())

    def wait_for(self, fetch, ready, timeout=60):
        """``fetch()`` once ``ready(value)`` (TensorBoard loads the event files in the background)."""
        deadline = time.time() + timeout
        while True:
            value = fetch()
            if ready(value) or time.time() > deadline:
                return value
            time.sleep(1)


@pytest.mark.slow
def test_served_hparams_table_is_the_sweeps(tmp_path):
    sweep = {"name": "tb", "storage": str(tmp_path / "results"), "resources": {"cpu": 1}, "max_concurrent": 2,
             "params": {**TINY, "source": "natural", "degradation": {"grid": [0, 1]}}}
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run([*CLI, "sweep", str(path)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp_dir = tmp_path / "results" / "tb"
    # the console: one table per change, no per-trial config tables, no driver_artifacts hint
    assert "driver_artifacts" not in proc.stdout + proc.stderr
    assert "config" not in proc.stdout.lower().split("experiment:")[0]
    assert f"tensorboard --logdir {exp_dir}" in proc.stdout

    served = Served(exp_dir)
    experiment = served.wait_for(lambda: served.post("data/plugin/hparams/experiment", {"experimentName": ""}),
                                 lambda e: e.get("hparamInfos"))
    columns = {h["name"]: h for h in experiment["hparamInfos"]}
    assert set(columns) == {"degradation"}, columns
    assert columns["degradation"]["differs"] is True
    assert columns["degradation"]["domainDiscrete"] == [0.0, 1.0]
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert {"final/iid_auc", "final/ood_auc", "final/iid_ood_gap", "final/alignment_finetuned",
            "final/centroid_finetuned"} <= set(metrics)
    assert not any(m.startswith("ray/") or m.rsplit("/", 1)[-1] in ("done", "time_since_restore") for m in metrics)

    request = {"experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0, "sliceSize": 100,
               "colParams": [{"hparam": "degradation", "includeInResult": True}]
               + [{"metric": {"tag": m, "group": ""}, "includeInResult": True} for m in metrics]}
    groups = served.wait_for(lambda: served.post("data/plugin/hparams/session_groups", request),
                             lambda g: len(g.get("sessionGroups", [])) == 2)["sessionGroups"]
    assert sorted(g["name"] for g in groups) == ["d0", "d1"]  # the trial names the console shows
    for g in groups:
        values = {v["name"]["tag"]: v["value"] for v in g["metricValues"]}
        assert 0 <= values["final/ood_auc"] <= 1 and 0 <= values["final/iid_auc"] <= 1
        assert values["final/iid_ood_gap"] == pytest.approx(values["final/iid_auc"] - values["final/ood_auc"], abs=1e-6)
        assert 0 <= values["final/shortcut_alignment_finetuned"] <= 1  # the findings' alignment, per trial
        assert g["hparams"]["degradation"] == float(g["name"][1:])

    scalars = served.get("data/plugin/scalars/tags")
    assert set(scalars) == {"d0", "d1"}
    for run, tags in scalars.items():
        assert all(t.startswith(("epoch/", "final/")) for t in tags), tags
        assert {"epoch/train_loss", "epoch/val_auc", "final/ood_auc"} <= set(tags)
    images = served.get("data/plugin/images/tags")
    for run in ("d0", "d1"):
        assert {"priority/probe_set", "priority/own_source", "priority/probe_set_over_epochs"} <= set(images[run])
    histograms = served.get("data/plugin/histograms/tags")
    assert not any(histograms.get(run) for run in ("d0", "d1")), histograms

"""The pre-flight on every node (trainables/preflight.py): the driver's probes read back by
another process (a second "node"), one that sees its own disk at the storage path (a private
mount namespace) refused with the fix, and each kind of problem named from the nodes' reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spectral_ray.config import parse_sweep
from trainables import preflight

REPO = Path(__file__).resolve().parents[1]
NODE = "import json, sys; from trainables.preflight import node_report; print(json.dumps(node_report(json.loads(sys.argv[1]))))"


def _sweep(tmp_path, **params):
    raw = {"name": "s", "storage": str(tmp_path / "results"), "params": {"fold": {"grid": [0, 1]}, **params}}
    return parse_sweep(raw, "inline", check_storage=False)


def _node_in_subprocess(spec: dict, private_mount: Path | None = None) -> dict:
    """node_report in another process; with ``private_mount``, one whose view of that folder is
    an empty tmpfs (its own disk, as a second machine would have)."""
    cmd = [sys.executable, "-c", NODE, json.dumps(spec)]
    if private_mount is not None:
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs tmpfs "{private_mount}" && exec "$0" "$@"', *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_with(monkeypatch, nodes, private: dict[int, Path] | None = None):
    """preflight.run with the cluster's nodes answered by subprocesses (no Ray)."""
    private = private or {}
    monkeypatch.setattr(preflight, "_alive_nodes", lambda: nodes)
    monkeypatch.setattr(preflight, "_ask_nodes",
                        lambda ns, specs: [_node_in_subprocess(s, private.get(i)) for i, s in enumerate(specs)])


def _node(i: int, gpus: float = 0) -> dict:
    return {"NodeID": f"{i:02d}" * 20, "NodeManagerAddress": f"10.0.0.{i}", "NodeManagerHostname": f"n{i}",
            "Alive": True, "Resources": {"CPU": 4, **({"GPU": gpus} if gpus else {})}}


def test_two_processes_sharing_the_folder_pass_and_the_report_is_written(tmp_path, monkeypatch, capsys):
    sweep = _sweep(tmp_path)
    exp, store = tmp_path / "results" / "s", tmp_path / "results" / "backbones"
    exp.mkdir(parents=True)
    _run_with(monkeypatch, [_node(1), _node(2)])
    report = preflight.run(sweep, str(exp), str(store))
    assert report["ok"] and len(report["nodes"]) == 2
    for r in report["nodes"]:
        assert r["storage"]["shared"] and r["storage"]["writable"] and r["store"]["shared"]
        assert r["flock"] == "excluded"  # the driver's flock held the other process off
        assert r["libraries"]["torch"] and r["code"] == preflight.code_hash()
    saved = json.loads((exp / preflight.REPORT).read_text())
    assert saved["ok"] and not saved["problems"]
    assert not list(exp.glob(".preflight-*")) and not list(store.glob(".preflight-*"))  # probes cleaned up
    assert "pre-flight: 2 node(s) ok" in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a mount namespace")
def test_multi_node_with_storage_on_a_local_disk_is_refused_with_the_fix(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path)
    exp = tmp_path / "results" / "s"
    exp.mkdir(parents=True)
    # node 2 has its own /…/results: nothing the driver writes there reaches it
    _run_with(monkeypatch, [_node(1), _node(2)], private={1: tmp_path / "results"})
    with pytest.raises(preflight.PreflightError) as e:
        preflight.run(sweep, str(exp), None)
    msg = str(e.value)
    assert "is not shared: it is each node's own disk" in msg and "node " in msg and "10.0.0.2" in msg
    assert "--storage /mnt/shared/spectral-ray/results" in msg and "s3://" in msg and "no trial was started" in msg
    saved = json.loads((exp / preflight.REPORT).read_text())
    assert not saved["ok"] and saved["nodes"][0]["storage"]["shared"] and not saved["nodes"][1]["storage"]["shared"]


def _report(node="aa", **over) -> dict:
    base = {"node": node, "host": f"h-{node}", "ip": "10.0.0.9", "libraries": {"torch": "2.4.0", "timm": "1.0"},
            "code": "c0", "storage": {"shared": True, "writable": True, "error": None},
            "store": {"shared": True, "writable": True, "error": None}, "flock": "excluded", "missing_paths": []}
    return {**base, **over}


def _evaluate(reports, gpu_nodes=None):
    return preflight.evaluate(reports, experiment="/mnt/shared/r/s", store="/mnt/shared/b", gpu_nodes=gpu_nodes or {},
                              versions={"torch": "2.4.0", "timm": "1.0"}, code="c0")


def test_each_problem_is_named():
    assert _evaluate([_report()]) == ([], [])
    problems, _ = _evaluate([_report(libraries={"torch": "2.3.1", "timm": "1.0"})])
    assert len(problems) == 1 and "torch 2.3.1 (driver: 2.4.0)" in problems[0] and "h-aa" in problems[0]
    problems, _ = _evaluate([_report(code="c1")])
    assert "other spectral_ray/trainables code" in problems[0]
    problems, _ = _evaluate([_report(missing_paths=["target root not found: /data/kneemri"])])
    assert "/data/kneemri" in problems[0] and "shared file system" in problems[0]
    problems, _ = _evaluate([_report(flock="acquired")])
    assert "flock does not exclude across nodes" in problems[0]
    problems, _ = _evaluate([_report(cuda={"available": False, "devices": 0, "torch_cuda": "12.4"})], {"aa": 1.0})
    assert "torch.cuda.is_available() is False" in problems[0] and "train on the CPU" in problems[0]
    assert _evaluate([_report(cuda={"available": True, "devices": 1, "torch_cuda": "12.4"})], {"aa": 1.0}) == ([], [])
    problems, _ = _evaluate([_report(storage={"shared": True, "writable": False, "error": "EROFS"})])
    assert "cannot write the experiment folder" in problems[0]
    _, notes = _evaluate([_report(store={"shared": False, "writable": True, "error": None})])
    assert "pretrains its own copy" in notes[0]
    problems, _ = _evaluate([{"node": "bb", "host": "h", "ip": "x", "failed": "GetTimeoutError: 300 s"}])
    assert "could not run the pre-flight" in problems[0]


def test_path_trials_keep_each_distinct_path_combination_once(tmp_path):
    sweep = _sweep(tmp_path, target="ct_lesion", target_params={"n": 10})
    assert preflight.path_trials(sweep) == [{"target": "ct_lesion", "target_params": {"n": 10}}]


def test_a_driver_off_the_cluster_lock_file_gets_a_note(tmp_path):
    lock = tmp_path / "cluster.txt"
    lock.write_text("# header\nnumpy==2.0.0\nray==2.60.0\n")
    (note,) = preflight.constraint_notes({"numpy": "1.26.4", "ray": "2.60.0", "torch": "2.4.0"}, lock)
    assert "numpy 1.26.4 (pinned 2.0.0)" in note and "ray" not in note.split(":")[1].split(";")[0]
    assert preflight.constraint_notes({"numpy": "2.0.0"}, lock) == []
    assert preflight.constraint_notes(preflight.library_versions()) == []  # this venv is what the file pins

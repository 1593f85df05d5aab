"""The documented cluster commands for real: `ray up` of a `local` provider cluster file (head
127.0.0.1, worker 127.0.0.2, reached over ssh), `ray submit CLUSTER sweeps/launch.py -- SWEEP
--set …`, `ray job submit --working-dir . -- python sweeps/launch.py …` through the `ray
dashboard` tunnel, the report read back, `ray down`.

Everything runs in private Linux namespaces (tests/loopback_cluster.sh): sshd on port 22, Ray's
ports and `ray stop` see only this run; /tmp and root's home are private folders; the kernel ends
every process of the run with it. Needs root (namespaces, sshd) and Debian's openssh-server and
rsync, which the test installs with apt when they are missing. By hand, one command:

    .venv/bin/python -m pytest tests/test_ray_up.py -m slow
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from namespaces import REPO, run_in_namespaces, skip_or_fail, step_codes, step_log, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SCRIPT = Path(__file__).with_name("loopback_cluster.sh")
FLAGS = ["--mount", "--net", "--pid"]
PACKAGES = {"/usr/sbin/sshd": "openssh-server", "/usr/bin/rsync": "rsync"}




def cluster_file(work: Path) -> dict:
    """A `local` provider cluster file like sweeps/cluster/local.yaml, for two loopback hosts on
    this machine: the nodes' environment (:func:`node_env`, the "image") first on PATH in
    ~/.bashrc, so one interpreter runs setup and runtime; the checkout copied by file_mounts is
    what runs (PYTHONPATH); WORK/shared is the shared file system."""
    env = work / "nodeenv"
    exports = [f"export PATH={env}/bin:$PATH", "export PYTHONPATH=~/spectral-ray",
               f"export SPECTRAL_RAY_STORE={work}/shared/backbones", f"export SPECTRAL_RAY_CACHE={work}/shared/cache",
               "export RAY_AUTH_MODE=disabled", f"export TMPDIR={work}/tmp", f"export RAY_TMPDIR={work}/tmp",
               "export OMP_NUM_THREADS=1"]
    common = "--num-cpus=1 --num-gpus=0 --object-store-memory=100000000 --disable-usage-stats"
    return {
        "cluster_name": "sr-loopback",
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.2"]},
        "auth": {"ssh_user": "root", "ssh_private_key": str(work / "id_ed25519")},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "file_mounts": {"~/spectral-ray": "."},
        "rsync_filter": [".gitignore"],
        "rsync_exclude": ["**/.git", "**/.git/**", ".venv"],
        "initialization_commands": [],
        "setup_commands": ["grep -q SPECTRAL_RAY_STORE ~/.bashrc || printf '%s\\n' "
                           + " ".join(f"'{e}'" for e in exports) + " >> ~/.bashrc",
                           "python -c 'import ray, requests, spectral_ray.cli'"],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        # no `ray stop` before `ray start`: both "hosts" share this machine's process table
        "head_start_ray_commands": [
            f"ray start --head --node-ip-address=127.0.0.1 --port=6379 {common} "
            "--autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1"],
        "worker_start_ray_commands": [
            f"ray start --address=$RAY_HEAD_IP:6379 --node-ip-address=127.0.0.2 {common} "
            f"--temp-dir={work}/tmp/ray-worker"],
    }


def node_env(work: Path) -> Path:
    """The hosts' Python environment, made before the run (the namespace has no network): a venv
    over this one (a .pth file) plus `ray[default,tune]` at this Ray's version, as the cluster
    files' setup installs it on real nodes (the job server and `ray job submit` need the extras
    the project itself does not). Returns its bin folder, with a `ray` command of its own."""
    import ray

    env = work / "nodeenv"
    # every site-packages this interpreter sees (a venv layered over another one has two)
    sites = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    subprocess.run([sys._base_executable, "-m", "venv", str(env)], check=True, capture_output=True, timeout=300)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (env / "lib" / pyver / "site-packages" / "this-venv.pth").write_text("".join(p + "\n" for p in sites))
    pip = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", f"ray[default,tune]=={ray.__version__}"],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode:
        raise RuntimeError(f"pip install ray[default] for the nodes failed: {pip.stderr[-2000:]}")
    wrapper = env / "bin" / "ray"
    wrapper.write_text(f'#!/bin/sh\nexec {env}/bin/python -m ray.scripts.scripts "$@"\n')
    wrapper.chmod(0o755)
    return env / "bin"


def _trials(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if (p / "params.json").exists())


@pytest.fixture(scope="module")
def loopback_run():
    skip_or_fail(unavailable("Linux namespaces and sshd", FLAGS, ("ip",), PACKAGES), "the ray up test")

    def args(work: Path):
        node_env(work)
        (work / "cluster.yaml").write_text(yaml.safe_dump(cluster_file(work), sort_keys=False))
        return [sys.executable]

    yield from run_in_namespaces(SCRIPT, FLAGS, "sr-up-", args, env=dict(os.environ, PYTHONPATH=str(REPO)))




def test_ray_up_submit_job_report_down(loopback_run):
    work, proc = loopback_run
    steps = step_codes(work)
    where = f"script rc {proc.returncode}; steps {steps}\n{proc.stderr[-2000:]}"
    for name in ("up", "wait-worker", "submit", "job", "job-logs", "job-status", "report", "down"):
        assert steps.get(name) == 0, f"step {name} failed ({where}):\n{step_log(work, name)[-4000:]}"
    assert proc.returncode == 0, where
    assert "nodes alive: 2" in step_log(work, "wait-worker")

    results = work / "shared" / "results"
    submitted = step_log(work, "submit")
    assert "trials: 4 TERMINATED" in submitted and "pretrainings in this run: 2" in submitted, submitted[-3000:]
    job = step_log(work, "job")
    # the job's sweep is the same grid: its backbones come from the shared store
    assert "trials: 4 TERMINATED" in job and "pretrainings in this run: 0" in job, job[-3000:]
    assert "succeeded" in job.lower(), job[-2000:]
    logs, status = step_log(work, "job-logs"), step_log(work, "job-status")
    assert "trials: 4 TERMINATED" in logs, logs[-3000:]  # `ray job logs` replays the driver's output
    assert "succeeded" in status.lower(), status[-2000:]

    for name in ("submitted", "job"):
        trials = _trials(results / name)
        assert len(trials) == 4, [t.name for t in trials]
        finals = [json.loads(t.joinpath("result.json").read_text().splitlines()[-1]) for t in trials]
        assert all(f.get("done") and isinstance(f.get("ood_auc"), float) for f in finals)
        # both hosts ran trials: the worker came up through ssh, file_mounts and setup_commands
        assert len({f["node_ip"] for f in finals}) == 2, [f["node_ip"] for f in finals]
    report = results / "submitted" / "report" / "report.md"
    assert report.exists() and "## Findings" in report.read_text()


def test_ray_down_left_nothing(loopback_run):
    work, proc = loopback_run
    assert step_codes(work).get("down") == 0, step_log(work, "down")[-3000:]
    after = step_log(work, "ps-after-down")
    left = [line for line in after.splitlines() if "raylet" in line or "gcs_server" in line or "ray::" in line]
    assert not left, after
    # nothing in the real home: the run's ~ was its own folder
    assert (work / "home" / "ray_bootstrap_config.yaml").exists()

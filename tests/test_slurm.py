"""sweeps/cluster/slurm.sbatch on a real Slurm: Debian's slurmctld, two slurmd nodes and munge
on loopback (tests/slurm_loopback.sh, in private namespaces: node2 is its own network, host name,
process table and node-local scratch). Through the sbatch file: a tiny sweep with `sbatch --wait`
whose trials ran on both nodes; node-local results refused by the pre-flight before any trial;
a sweep cancelled mid-way (`scancel`) and submitted again, which resumes without rerunning a
finished trial or losing one; the time-limit warning (USR1), on which the job requeues itself and
the requeued job resumes. Needs root; installs slurmctld, slurmd, slurm-client and munge
with apt when missing. By hand:

    .venv/bin/python -m pytest tests/test_slurm.py -m slow -s      (-s prints the trials' nodes)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from namespaces import REPO, run_in_namespaces, skip_or_fail, step_codes, step_log, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SCRIPT = Path(__file__).with_name("slurm_loopback.sh")
FLAGS = ["--mount", "--net", "--pid", "--uts"]
PACKAGES = {"/usr/sbin/slurmctld": "slurmctld", "/usr/sbin/slurmd": "slurmd", "/usr/bin/sbatch": "slurm-client",
            "/usr/sbin/munged": "munge"}




def node_bin(work: Path) -> Path:
    """`python` and `ray` for the nodes: this interpreter (the cluster's shared environment)."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for name, cmd in (("python", sys.executable), ("ray", f"{sys.executable} -m ray.scripts.scripts")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.fixture(scope="module")
def slurm_run():
    skip_or_fail(unavailable("Linux namespaces, slurmd, munged", FLAGS, ("nsenter", "ip"), PACKAGES,
                             apt_flags=("--no-install-recommends",), apt_timeout_s=900), "the Slurm test")
    yield from run_in_namespaces(SCRIPT, FLAGS, "sr-slurm-", lambda work: [node_bin(work)])




def _finals(exp: Path) -> dict[str, list[dict]]:
    """{trial folder: every result row} of the experiment's trials."""
    out = {}
    for t in sorted(exp.glob("*/result.json")):
        out[t.parent.name] = [json.loads(line) for line in t.read_text().splitlines() if line.strip()]
    return out


def _grid_point(trial_folder: str) -> str:
    """The grid point of a trial folder (a restarted trial's folder adds Tune's ``_<hex>``)."""
    return re.sub(r"_[0-9a-f]{5,}$", "", trial_folder)


def _show_nodes(name: str, exp: Path) -> None:
    print(f"\n{name}: trial -> node")
    for trial, rows in _finals(exp).items():
        print(f"  {trial:<40} {rows[-1].get('hostname')} ({rows[-1].get('node_ip')})")


def test_sweep_through_the_sbatch_file_on_two_nodes(slurm_run):
    work, proc = slurm_run
    where = f"script rc {proc.returncode}; steps {step_codes(work)}\n{proc.stderr[-3000:]}"
    assert step_codes(work).get("full") == 0, f"{where}\n{step_log(work, 'full', job_out=True)[-5000:]}"
    out = step_log(work, "full", job_out=True)
    assert "pre-flight: 2 node(s) ok" in out and "trials: 4 TERMINATED" in out, out[-5000:]
    exp = work / "shared" / "results" / "full"
    finals = _finals(exp)
    _show_nodes("full", exp)
    assert len(finals) == 4 and all(rows[-1].get("done") for rows in finals.values())
    assert {rows[-1]["hostname"] for rows in finals.values()} == {"node1", "node2"}
    pre = json.loads((exp / "preflight.json").read_text())
    assert pre["ok"] and sorted(n["host"] for n in pre["nodes"]) == ["node1", "node2"]
    assert json.loads((exp / "driver.json").read_text())["released"] is True


def test_node_local_results_are_refused_before_any_trial(slurm_run):
    work, _ = slurm_run
    out = step_log(work, "local", job_out=True)
    assert step_codes(work).get("local") == 2, out[-4000:]  # the driver's exit status, a user error
    assert "is not shared: it is each node's own disk" in out and "node2 (10.201.0.2)" in out, out[-4000:]
    assert "--storage /mnt/shared/spectral-ray/results" in out and "no trial was started" in out
    assert "Trial status" not in out


def test_cancelled_sweep_resumes_from_the_same_command(slurm_run):
    work, _ = slurm_run
    steps = step_codes(work)
    assert steps.get("resume") == 0, f"steps {steps}\n{step_log(work, 'resume', job_out=True)[-5000:]}"
    before = set((work / "logs" / "finished-before-kill.txt").read_text().split())
    killed = step_log(work, "killed", job_out=True)
    assert 1 <= len(before) < 8 and "trials: 8" not in killed, killed[-3000:]  # cancelled mid-sweep
    resumed = step_log(work, "resume", job_out=True)
    assert "resuming the existing experiment" in resumed and "trials: 8 TERMINATED" in resumed, resumed[-5000:]
    exp = work / "shared" / "results" / "killed"
    finals = _finals(exp)
    _show_nodes("killed + resumed", exp)
    done = {t: rows for t, rows in finals.items() if rows[-1].get("done")}
    grid_points = {_grid_point(t) for t in done}
    assert len(grid_points) == 8, sorted(finals)  # nothing lost
    for t in before:  # finished before the kill: kept, not run again
        rows = finals[t]
        assert sum(r.get("done", False) for r in rows) == 1 and [r["training_iteration"] for r in rows] == \
            list(range(1, len(rows) + 1)), (t, rows)
        assert sum(1 for other in finals if _grid_point(other) == _grid_point(t)) == 1, sorted(finals)


def test_time_limit_warning_requeues_the_job_which_resumes(slurm_run):
    work, _ = slurm_run
    job = (work / "logs" / "requeue-job.txt").read_text()
    out = step_log(work, "requeue", job_out=True)
    assert "JobState=COMPLETED" in job and "Restarts=1" in job, job + out[-4000:]
    assert "requeueing job" in out and "(restart 1)" in out, out[-4000:]
    assert "resuming the existing experiment" in out and "trials: 4 TERMINATED" in out, out[-4000:]


def test_every_daemon_is_gone_at_the_end(slurm_run):
    work, proc = slurm_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    left = [line for line in step_log(work, "ps-at-end", job_out=True).splitlines()
            if any(d in line for d in ("slurmctld", "raylet", "gcs_server"))]
    assert not left, left

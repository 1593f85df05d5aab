"""Shared by the tests that build a cluster inside Linux namespaces on one machine
(tests/test_ray_up.py: `ray up` over sshd; tests/test_slurm.py: a two-node Slurm): can this
machine do it, run the script as root in fresh namespaces, and read the logs its `step`
function (tests/loopback_steps.sh) wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from raynodes import short_tmpdir

REPO = Path(__file__).resolve().parents[1]


def unavailable(needs: str, flags: list[str], tools: tuple[str, ...], packages: dict[str, str],
                apt_flags: tuple[str, ...] = (), apt_timeout_s: int = 600) -> str | None:
    """Why this machine cannot run a namespace test, or None. ``flags`` are unshare's namespace
    flags; ``packages`` maps a file the test needs to the Debian package that installs it (installed
    with apt-get when missing)."""
    if os.geteuid() != 0:
        return f"needs root ({needs})"
    for tool in ("unshare", *tools):
        if not shutil.which(tool):
            return f"needs {tool}"
    probe = subprocess.run(["unshare", *flags, "--fork", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot create namespaces here: {probe.stderr.strip()}"
    missing = [pkg for path, pkg in packages.items() if not Path(path).exists()]
    if missing:
        if not shutil.which("apt-get"):
            return f"needs {', '.join(missing)} and there is no apt-get to install them"
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *apt_flags, *missing]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=apt_timeout_s)
            if proc.returncode:
                return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}"
    return None


def skip_or_fail(reason: str | None, what: str) -> None:
    """Skip where the machine cannot run ``what``; on CI (``CI`` set) that is a failure instead."""
    import pytest

    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{what} cannot run on this CI machine: {reason}")
        pytest.skip(reason)


def run_in_namespaces(script: Path, flags: list[str], prefix: str, args, env: dict | None = None,
                      timeout_s: int = 1400):
    """Generator for a module fixture: run ``bash script WORK REPO *args(WORK)`` in new namespaces
    (``flags``, plus a private /proc), yield ``(WORK, CompletedProcess)``, then remove WORK."""
    work = short_tmpdir(prefix)
    env = dict(os.environ if env is None else env)
    env.pop("RAY_ADDRESS", None)
    cmd = ["unshare", *flags, "--fork", "--mount-proc", "--propagation", "private",
           "bash", str(script), str(work), str(REPO), *map(str, args(work))]
    try:
        yield work, subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=REPO)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step_log(work: Path, name: str, job_out: bool = False) -> str:
    """The output of step ``name`` (WORK/logs/NAME.log); with ``job_out``, a batch job's
    NAME-JOBID.out files instead where there are any."""
    logs = work / "logs"
    paths = (sorted(logs.glob(f"{name}-*.out")) if job_out else []) or [logs / f"{name}.log"]
    return "\n".join(p.read_text(errors="replace") for p in paths if p.exists()) or f"(no {name} log)"


def step_codes(work: Path) -> dict[str, int]:
    """{step name: exit status} from WORK/logs/steps.log."""
    out = {}
    for line in step_log(work, "steps").splitlines():
        if " rc=" in line:
            name, _, rc = line.partition(" rc=")
            out[name] = int(rc)
    return out

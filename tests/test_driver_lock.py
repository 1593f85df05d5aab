"""One driver per experiment (trainables/driver_lock.py): a second driver is refused with the
first one named, a dead driver's lock is taken over, and the bucket form's lease expires."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs
import pytest

from trainables import driver_lock

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from trainables import driver_lock
with driver_lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_driver_is_refused_naming_the_first(tmp_path):
    exp = tmp_path / "results" / "exp"
    first = _holder(exp)
    try:
        with pytest.raises(driver_lock.DriverLockHeld) as e:
            with driver_lock.hold(str(exp)):
                pytest.fail("two drivers held one experiment")
        msg = str(e.value)
        assert f"pid {first.pid}" in msg and str(exp) in msg and "--name NEW_NAME" in msg
    finally:
        first.kill()
        first.wait()


def test_lock_of_a_killed_driver_is_recovered(tmp_path, capsys):
    exp = tmp_path / "exp"
    dead = _holder(exp)
    dead.send_signal(signal.SIGKILL)  # no cleanup ran: driver.json still says it holds the lock
    dead.wait()
    assert json.loads((exp / driver_lock.OWNER).read_text())["released"] is False
    with driver_lock.hold(str(exp)):
        owner = json.loads((exp / driver_lock.OWNER).read_text())
        assert owner["pid"] == os.getpid() and not owner["released"]
    err = capsys.readouterr().err
    assert "took over the lock of a driver that is gone" in err and f"pid {dead.pid}" in err
    assert json.loads((exp / driver_lock.OWNER).read_text())["released"] is True
    with driver_lock.hold(str(exp)):  # a cleanly released lock: no note
        pass
    assert "took over" not in capsys.readouterr().err


def test_bucket_lease_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    fs, root = pyarrow.fs.LocalFileSystem(), str(tmp_path / "bucket" / "exp")
    fs.create_dir(root, recursive=True)
    live = {"host": "other", "pid": 1, "token": "t", "heartbeat": time.time(), "started_utc": "x", "released": False}
    (Path(root) / driver_lock.OWNER).write_text(json.dumps(live))
    with pytest.raises(driver_lock.DriverLockHeld, match="pid 1 on host other"):
        with driver_lock.lease(fs, root, "s3://b/exp", settle_s=0):
            pass
    (Path(root) / driver_lock.OWNER).write_text(json.dumps({**live, "heartbeat": time.time() - 600}))
    with driver_lock.lease(fs, root, "s3://b/exp", settle_s=0, heartbeat_s=0.1):
        time.sleep(0.4)
        held = json.loads((Path(root) / driver_lock.OWNER).read_text())
        assert held["pid"] == os.getpid() and time.time() - held["heartbeat"] < 1  # renewed
    assert "took over the lock" in capsys.readouterr().err
    assert json.loads((Path(root) / driver_lock.OWNER).read_text())["released"] is True


def test_run_sweep_refuses_a_second_driver_before_touching_the_experiment(tmp_path, monkeypatch):
    from spectral_ray.config import parse_sweep
    from trainables import launcher

    sweep = parse_sweep({"name": "s", "storage": str(tmp_path / "results"), "params": {"fold": {"grid": [0, 1]}}},
                        "inline", check_storage=False)
    monkeypatch.setattr(launcher, "init_ray", lambda: None)
    first = _holder(Path(launcher.experiment_path(sweep)))
    try:
        with pytest.raises(driver_lock.DriverLockHeld, match="another driver is running"):
            launcher.run_sweep(sweep)
        assert not (Path(launcher.experiment_path(sweep)) / launcher.SWEEP_COPY).exists()
    finally:
        first.kill()
        first.wait()

"""One driver per experiment: a lock in the experiment folder, taken before anything is restored.

Two drivers on one experiment (a sweep submitted twice, a Slurm job resubmitted while the first
still runs, ``ray job submit`` beside a ``tmux`` driver) would both restore the same trials and
train them into the same folders. :func:`hold` refuses the second one with a message naming the
first (host, pid, Slurm job, start time).

* On a file system (a local folder, NFS, Lustre, ``file://``) the lock is ``flock`` on
  ``<experiment>/driver.lock``: the kernel (or the NFS server, when a client's lease lapses)
  releases it when its driver dies, however it died, so a dead driver's lock never blocks a
  resubmission. ``driver.json`` beside it says who holds it; one left by a dead driver is
  reported as recovered.
* On a bucket (``s3://``, ``gs://``), which has no locks, ``driver.json`` is a lease: its holder
  rewrites it every :data:`HEARTBEAT_S` seconds; a lease not renewed for :data:`STALE_AFTER_S`
  seconds belongs to a dead driver and is taken over (reported as recovered).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid

from spectral_ray.atomic import read_json_dict
from spectral_ray.cli import UserError

LOCK = "driver.lock"
OWNER = "driver.json"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 90.0


class DriverLockHeld(UserError):
    """Another live driver runs this experiment."""


def _owner(token: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "started": time.time(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time(),
            "argv": sys.argv, "released": False}


def describe(owner: dict | None) -> str:
    if not owner:
        return "a driver that left no description"
    job = f", Slurm job {owner['slurm_job_id']}" if owner.get("slurm_job_id") else ""
    return f"pid {owner.get('pid')} on host {owner.get('host')}{job}, started {owner.get('started_utc')}"


def _refusal(experiment: str, owner: dict | None, lock: str) -> DriverLockHeld:
    return DriverLockHeld(
        f"another driver is running the experiment {experiment}: {describe(owner)} (lock: {lock}). "
        f"Wait for it to finish (the same command then resumes anything left), stop it first "
        f"(scancel its Slurm job, `ray job stop`, or end its process), or pass --name NEW_NAME "
        f"for a separate experiment.")


def _recovered_note(experiment: str, before: dict | None) -> None:
    if before and not before.get("released"):
        print(f"note: {experiment}: took over the lock of a driver that is gone ({describe(before)}); "
              f"its unfinished trials run again", file=sys.stderr)


def _local_path(experiment: str) -> str | None:
    if "://" not in experiment:
        return experiment
    if experiment.startswith("file://"):
        return experiment.removeprefix("file://")
    return None


@contextlib.contextmanager
def hold(experiment: str):
    """Hold the experiment's driver lock for the ``with`` block; raises :class:`DriverLockHeld`
    when another live driver holds it. ``experiment``: a folder or a bucket URI."""
    local = _local_path(experiment)
    if local is not None:
        with _flock(local, experiment):
            yield
    else:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(experiment)
        with lease(fs, root.rstrip("/"), experiment):
            yield


@contextlib.contextmanager
def _flock(folder: str, experiment: str):
    import fcntl

    os.makedirs(folder, exist_ok=True)
    lock_path, owner_path = os.path.join(folder, LOCK), os.path.join(folder, OWNER)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(experiment, read_json_dict(owner_path), lock_path) from None
        _recovered_note(experiment, read_json_dict(owner_path))
        me = _owner(uuid.uuid4().hex)
        _write_json(owner_path, me)
        try:
            yield
        finally:
            _write_json(owner_path, {**me, "released": True, "released_utc": _utc()})
    finally:
        os.close(fd)  # releases the flock


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: str, data: dict) -> None:
    from spectral_ray.atomic import atomic_open

    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1)


def _fs_read(fs, path: str) -> dict | None:
    try:
        with fs.open_input_stream(path) as f:
            d = json.loads(f.read().decode())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError, FileNotFoundError):
        return None


def _fs_write(fs, path: str, data: dict) -> None:
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(data, indent=1).encode())


@contextlib.contextmanager
def lease(fs, root: str, experiment: str, *, heartbeat_s: float = HEARTBEAT_S,
          stale_after_s: float = STALE_AFTER_S, settle_s: float = 2.0):
    """The bucket form of the lock: ``root/driver.json`` renewed every ``heartbeat_s`` by a
    thread; refused while another holder renewed it less than ``stale_after_s`` ago. ``fs``: a
    pyarrow filesystem. After writing its claim the driver waits ``settle_s`` and reads it back,
    so of two drivers starting together the one whose write landed last wins and the other is
    refused."""
    path = f"{root}/{OWNER}"
    fs.create_dir(root, recursive=True)
    before = _fs_read(fs, path)
    if before and not before.get("released") and time.time() - float(before.get("heartbeat", 0)) < stale_after_s:
        raise _refusal(experiment, before, path)
    me = _owner(uuid.uuid4().hex)
    _fs_write(fs, path, me)
    time.sleep(settle_s)
    now = _fs_read(fs, path)
    if not now or now.get("token") != me["token"]:
        raise _refusal(experiment, now, path)
    _recovered_note(experiment, before)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(heartbeat_s):
            with contextlib.suppress(OSError):
                _fs_write(fs, path, {**me, "heartbeat": time.time()})

    thread = threading.Thread(target=renew, name="driver-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(OSError):
            _fs_write(fs, path, {**me, "heartbeat": time.time(), "released": True, "released_utc": _utc()})

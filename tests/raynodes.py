"""Helpers for tests that start Ray themselves: loopback nodes with their own temp dirs, a
tiny-sweep runner through the CLI, and a teardown that kills only the processes the test
started (found by the test's own temp dir in their command line), never `ray stop`, which
would kill every Ray on a machine shared with other users."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "spectral_ray.cli"]
# The smallest sweep that still pretrains and fine-tunes for real (as tests/test_tune.py).
TINY = {"size": 32, "source_n": 200, "target_n": 160, "psd_images": 32, "pretrain.epochs": 1, "finetune.epochs": 1}


def short_tmpdir(prefix: str) -> Path:
    """A short path under /tmp: Ray's Unix sockets live below its temp dir (107-byte limit)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (this process excluded)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmd and state != "Z":
            out.append(int(p.name))
    return out


def kill_mentioning(marker: str, timeout: float = 20) -> list[int]:
    """SIGTERM, then SIGKILL, the processes whose command line contains ``marker``; returns
    the ones still alive after ``timeout`` (should be none)."""
    for sig, wait in ((signal.SIGTERM, timeout / 2), (signal.SIGKILL, timeout / 2)):
        for pid in pids_mentioning(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while pids_mentioning(marker) and time.time() < deadline:
            time.sleep(0.2)
        if not pids_mentioning(marker):
            return []
    return pids_mentioning(marker)


def env(**extra) -> dict:
    """Subprocess environment: auth off, one thread, and RAY_TMPDIR so that a driver that starts
    its own local Ray keeps it under the test's folder (and never joins another user's)."""
    e = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    e.pop("RAY_ADDRESS", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


class LoopbackCluster:
    """A Ray head and worker nodes on 127.0.0.1, each node with its own --temp-dir (Ray allows a
    temp dir per node) under one short root; :meth:`stop` kills everything under that root."""

    def __init__(self, root: Path | None = None):
        self.root = root or short_tmpdir("sr-nodes-")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes = 0

    def _start(self, *args: str, cpus: int = 1, timeout: float = 120) -> None:
        temp = self.root / f"node{self.nodes}"
        temp.mkdir(parents=True, exist_ok=True)
        self.nodes += 1
        cmd = ["ray", "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
               f"--temp-dir={temp}", "--object-store-memory=100000000", "--disable-usage-stats"]
        ray_bin = Path(sys.executable).parent / "ray"
        cmd[0] = str(ray_bin) if ray_bin.exists() else "ray"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout,
                              start_new_session=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def start_head(self, cpus: int = 1) -> "LoopbackCluster":
        self._start("--head", f"--port={self.port}", "--include-dashboard=false", cpus=cpus)
        return self

    def add_node(self) -> "LoopbackCluster":
        self._start(f"--address={self.address}")
        return self

    def stop(self) -> list[int]:
        left = kill_mentioning(str(self.root))
        shutil.rmtree(self.root, ignore_errors=True)
        return left


def run_cli(*args, timeout: float = 170, **env_extra) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env(**env_extra),
                          timeout=timeout)


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if p.is_dir() and (p / "params.json").exists())


def rows(trial: Path) -> list[dict]:
    path = trial / "result.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line torn by a kill
    return out


def final_row(trial: Path) -> dict | None:
    done = [r for r in rows(trial) if r.get("done") and "iid_auc" in r and "psd_finetuned" in r]
    return done[-1] if done else None


def tensorboard_tags(trial: Path) -> dict:
    """{"scalars", "images", "hparams"} tags of all TensorBoard event files in a trial folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(trial), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    return {"scalars": set(tags["scalars"]), "images": set(tags["images"]),
            "hparams": set(ea.PluginTagToContent("hparams")), "accumulator": ea}


def run_intervals(trials: list[Path]) -> list[tuple[float, float]]:
    """(start, end) wall-clock seconds of each trial's last attempt, from its final report
    (``timestamp`` is when it was made, ``time_total_s`` how long the attempt had run)."""
    out = []
    for t in trials:
        final = final_row(t)
        if final is not None:
            # `timestamp` is whole seconds (truncated): start + 1 s can only hide an overlap under 1 s
            out.append((final["timestamp"] - final["time_total_s"] + 1.0, float(final["timestamp"])))
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one time."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best

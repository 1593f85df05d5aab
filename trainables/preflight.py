"""A pre-flight on every node of the Ray cluster, before the first trial starts.

What breaks a multi-node sweep only after trials trained, found in seconds instead:

* **storage** shared and writable from every node: the driver writes a token into the experiment
  folder and every node must read it back and write its own, which the driver must then see (a
  local folder on a multi-node cluster is each node's own disk: refused, with the fix);
* the **backbone store** writable from every node, and ``flock`` excluding across nodes there
  (the store serialises pretraining on it): the driver holds a lock each node must fail to take;
* every **data and weights path** the trials read present on every node
  (:func:`spectral_ray.config.missing_paths`, the check validation makes on the driver);
* ``torch.cuda.is_available()`` on every node with GPUs when the sweep reserves GPUs (a node
  whose driver is missing would train its trials on the CPU);
* the same **library versions** and the same ``spectral_ray``/``trainables`` code on every node
  as on the driver (a mismatch named with both versions).

The nodes' answers, the problems and notes go to ``<experiment>/preflight.json``. Any problem
raises :class:`PreflightError` (nothing is trained). Nodes that join later (an autoscaler's)
are not checked: on those the cluster file's pinned install (constraints/cluster.txt) holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
import uuid
from pathlib import Path

from spectral_ray.cli import UserError

REPORT = "preflight.json"
# Distributions whose versions must agree across nodes (what trains and what runs the trials).
LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-image", "scikit-learn", "ray",
             "pyarrow", "optuna", "pydantic", "filelock", "PyYAML", "tensorboard")
PATH_KEYS = ("source", "source_params", "target", "target_params", "source_weights")
NODE_TIMEOUT_S = 300
SHARED_FIX = ("put the results on a file system mounted at the same path on every node "
              "(--storage /mnt/shared/spectral-ray/results) or in a bucket (--storage s3://BUCKET/spectral-ray); "
              "docs/CLUSTER.md")


class PreflightError(UserError):
    """A node cannot run this sweep's trials correctly."""


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_hash() -> str:
    """sha256 (16 hex) of every ``.py`` file of the ``spectral_ray`` and ``trainables`` packages
    this interpreter imports, by relative path."""
    import spectral_ray
    import trainables

    h = hashlib.sha256()
    for pkg in (spectral_ray, trainables):
        root = Path(pkg.__file__).parent
        for p in sorted(root.rglob("*.py")):
            h.update(f"{pkg.__name__}/{p.relative_to(root).as_posix()}\0".encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _fs(uri: str):
    import pyarrow.fs

    if "://" not in uri:
        return pyarrow.fs.LocalFileSystem(), uri
    return pyarrow.fs.FileSystem.from_uri(uri)


def _probe_folder(uri: str, token: str, node: str) -> dict:
    """On a node: does ``uri/.preflight-<token>/driver`` hold the token (shared), can this node
    write beside it (writable)?"""
    out = {"path": uri, "shared": False, "writable": False, "error": None}
    try:
        fs, root = _fs(uri)
        probe = f"{root.rstrip('/')}/.preflight-{token}"
        with fs.open_input_stream(f"{probe}/driver") as f:
            out["shared"] = f.read().decode() == token
    except FileNotFoundError:
        out["error"] = "the file the driver wrote there is missing"
    except OSError as e:
        out["error"] = f"reading the driver's file: {str(e)[:200]}"
    try:
        fs, root = _fs(uri)
        with fs.open_output_stream(f"{root.rstrip('/')}/.preflight-{token}/node-{node}") as f:
            f.write(token.encode())
        out["writable"] = True
    except (OSError, FileNotFoundError) as e:
        out["error"] = (out["error"] + "; " if out["error"] else "") + f"writing: {str(e)[:200]}"
    return out


def _probe_flock(store: str, token: str) -> str:
    """'excluded' when the driver's lock on the store blocks this node, 'acquired' when it does not."""
    import fcntl

    path = os.path.join(store, f".preflight-{token}", "flock")
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        return f"error: {e}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "acquired"
    except BlockingIOError:
        return "excluded"
    except OSError as e:
        return f"error: {e}"
    finally:
        os.close(fd)


def _cuda() -> dict:
    import torch

    return {"available": bool(torch.cuda.is_available()), "devices": int(torch.cuda.device_count()),
            "torch_cuda": torch.version.cuda}


def node_report(spec: dict) -> dict:
    """What one node sees (runs on that node). ``spec``: experiment, store (or None), token,
    node (its id), trials (flat path parameters), cuda (check it)."""
    from spectral_ray.config import missing_paths

    out = {"node": spec["node"], "host": socket.gethostname(), "ip": spec.get("ip"),
           "libraries": library_versions(), "code": code_hash(),
           "storage": _probe_folder(spec["experiment"], spec["token"], spec["node"])}
    if spec.get("store"):
        out["store"] = _probe_folder(spec["store"], spec["token"], spec["node"])
        out["flock"] = _probe_flock(spec["store"], spec["token"])
    out["missing_paths"] = sorted({m for flat in spec["trials"] for m in missing_paths(flat)})
    if spec.get("cuda"):
        out["cuda"] = _cuda()
    return out


def path_trials(sweep) -> list[dict]:
    """The trials' path parameters (what :func:`spectral_ray.config.missing_paths` reads), each
    distinct combination once."""
    seen: dict[str, dict] = {}
    for flat in sweep.trials():
        sub = {k: v for k, v in flat.items() if k.split(".")[0] in PATH_KEYS}
        seen.setdefault(json.dumps(sub, sort_keys=True, default=str), sub)
    return list(seen.values())


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _ask_nodes(nodes: list[dict], specs: list[dict]) -> list[dict]:
    """:func:`node_report` on each node (a zero-CPU task pinned there); the driver's node alone
    is asked in this process (no worker to start)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    if len(nodes) == 1 and nodes[0]["NodeID"] == here:
        return [node_report(specs[0])]
    task = ray.remote(num_cpus=0, max_retries=0)(node_report)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(s)
            for n, s in zip(nodes, specs)]
    out = []
    for n, s, ref in zip(nodes, specs, refs):
        try:
            out.append(ray.get(ref, timeout=NODE_TIMEOUT_S))
        except Exception as e:  # a node that cannot even run the check is a problem to name, not a crash
            out.append({"node": s["node"], "ip": s["ip"], "host": n.get("NodeManagerHostname"),
                        "failed": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    return out


def _name(r: dict) -> str:
    return f"node {r.get('host')} ({r.get('ip')})"


def _storage_problems(reports: list[dict], experiment: str, multi: bool) -> list[str]:
    out = []
    local = "://" not in experiment or experiment.startswith("file://")
    for r in reports:
        s = r["storage"]
        if not s["shared"]:
            what = ("is not shared: it is each node's own disk there" if local and multi
                    else "does not show the file the driver wrote")
            out.append(f"the experiment folder {experiment} {what} ({_name(r)}: {s['error'] or 'other content'}); "
                       f"{SHARED_FIX}")
        elif not s["writable"]:
            out.append(f"{_name(r)} cannot write the experiment folder {experiment} ({s['error']}); "
                       f"give every node write access to it")
    return out


def _store_findings(reports: list[dict], store: str | None, seen_by_driver: set[str]) -> tuple[list[str], list[str]]:
    if not store:
        return [], []
    problems, notes = [], []
    for r in reports:
        s = r["store"]
        if not s["writable"]:
            problems.append(f"{_name(r)} cannot write the backbone store {store} ({s['error']}); "
                            f"give every node write access, or set params.store / SPECTRAL_RAY_STORE")
        elif not s["shared"] or r["node"] not in seen_by_driver:
            notes.append(f"the backbone store {store} is not shared with {_name(r)}: that node pretrains its own "
                         f"copy of each backbone (set SPECTRAL_RAY_STORE or params.store to a shared folder)")
        elif r["flock"] == "acquired":
            problems.append(f"flock does not exclude across nodes on the backbone store {store} ({_name(r)} took "
                            f"the lock the driver holds): trials would pretrain one backbone at once on several "
                            f"nodes. Mount it with working locks (NFSv4 without `nolock`, Lustre with `-o flock`)")
        elif r["flock"].startswith("error"):
            problems.append(f"flock on the backbone store {store} fails on {_name(r)}: {r['flock']}")
    return problems, notes


def _version_problems(reports: list[dict], mine: dict, my_code: str) -> list[str]:
    out = []
    for r in reports:
        diff = [f"{k} {r['libraries'].get(k)} (driver: {v})" for k, v in mine.items() if r["libraries"].get(k) != v]
        if diff:
            out.append(f"{_name(r)} runs other library versions than the driver: {', '.join(diff)}; install the "
                       f"same versions on every node (pip install -c constraints/cluster.txt, docs/CLUSTER.md)")
        if r["code"] != my_code:
            out.append(f"{_name(r)} runs other spectral_ray/trainables code than the driver (hash {r['code']}, "
                       f"driver {my_code}); install the same checkout on every node")
    return out


def evaluate(reports: list[dict], *, experiment: str, store: str | None, gpu_nodes: dict[str, float],
             versions: dict, code: str, seen_by_driver: dict[str, set[str]] | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of the nodes' reports. ``gpu_nodes``: {node id: GPUs} where the sweep
    reserves GPUs (empty otherwise); ``seen_by_driver``: {"storage"|"store": node ids whose
    written file the driver read back}."""
    seen = seen_by_driver or {}
    problems = [f"{_name(r)} could not run the pre-flight: {r['failed']}" for r in reports if "failed" in r]
    ok = [r for r in reports if "failed" not in r]
    problems += _storage_problems(ok, experiment, multi=len(reports) > 1)
    for r in ok:
        if r["storage"]["shared"] and r["storage"]["writable"] and r["node"] not in seen.get("storage", {r["node"]}):
            problems.append(f"the driver cannot see what {_name(r)} wrote into {experiment}; {SHARED_FIX}")
    store_problems, notes = _store_findings(ok, store, seen.get("store", {r["node"] for r in ok}))
    problems += store_problems
    for r in ok:
        if r["missing_paths"]:
            problems.append(f"{_name(r)} lacks data/weights paths the trials read: {'; '.join(r['missing_paths'])}. "
                            f"Put the data on the shared file system (the same path on every node)")
        gpus = gpu_nodes.get(r["node"])
        if gpus and not (r.get("cuda") or {}).get("available"):
            c = r.get("cuda") or {}
            problems.append(f"{_name(r)} has {gpus:g} GPU(s) in Ray but torch.cuda.is_available() is False there "
                            f"(torch CUDA build: {c.get('torch_cuda')}): its trials would train on the CPU. "
                            f"Install the NVIDIA driver / a CUDA build of torch on that node")
    problems += _version_problems(ok, versions, code)
    return problems, notes


CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints" / "cluster.txt"


def constraint_notes(versions: dict, path: Path = CONSTRAINTS) -> list[str]:
    """Libraries of ``versions`` whose version differs from the pin in constraints/cluster.txt
    (the cluster install's lock file), as one note; none when the file is absent (an installed
    package without the checkout)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    pins = {}
    for line in lines:
        name, sep, version = line.partition("==")
        if sep and not line.lstrip().startswith("#"):
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    off = [f"{n} {v} (pinned {pins[n.lower()]})" for n, v in versions.items() if n.lower() in pins and v != pins[n.lower()]]
    return [f"the driver's environment differs from {path.name}: {', '.join(off)}; cluster installs use "
            f"`pip install -c constraints/cluster.txt` (docs/CLUSTER.md)"] if off else []


def _plant(uri: str, token: str) -> None:
    fs, root = _fs(uri)
    probe = f"{root.rstrip('/')}/.preflight-{token}"
    fs.create_dir(probe, recursive=True)
    with fs.open_output_stream(f"{probe}/driver") as f:
        f.write(token.encode())


def _written_by(uri: str, token: str) -> set[str]:
    """Node ids whose file the driver reads back in ``uri/.preflight-<token>``."""
    import pyarrow.fs

    fs, root = _fs(uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(f"{root.rstrip('/')}/.preflight-{token}", allow_not_found=True))
    return {Path(i.path).name.removeprefix("node-") for i in infos if Path(i.path).name.startswith("node-")}


def _remove(uri: str, token: str) -> None:
    fs, root = _fs(uri)
    try:
        fs.delete_dir(f"{root.rstrip('/')}/.preflight-{token}")
    except (OSError, FileNotFoundError):
        pass


def _write_report(experiment: str, report: dict) -> None:
    fs, root = _fs(experiment)
    with fs.open_output_stream(f"{root.rstrip('/')}/{REPORT}") as f:
        f.write(json.dumps(report, indent=1, default=str).encode())


def _specs(nodes: list[dict], sweep, experiment: str, store: str | None, token: str) -> list[dict]:
    trials = path_trials(sweep)
    return [{"experiment": experiment, "store": store, "token": token, "node": n["NodeID"][:12],
             "ip": n.get("NodeManagerAddress"), "trials": trials,
             "cuda": bool(sweep.resources.gpu and n.get("Resources", {}).get("GPU"))} for n in nodes]


def _survey(sweep, experiment: str, store: str | None, nodes: list[dict], token: str):
    """(reports, {"storage"|"store": node ids the driver saw write}) with the driver's token
    planted and its flock on the store held while the nodes look."""
    import fcntl

    _plant(experiment, token)
    fd = None
    try:
        if store:
            _plant(store, token)
            fd = os.open(os.path.join(store, f".preflight-{token}", "flock"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        reports = _ask_nodes(nodes, _specs(nodes, sweep, experiment, store, token))
        seen = {"storage": _written_by(experiment, token)}
        if store:
            seen["store"] = _written_by(store, token)
        return reports, seen
    finally:
        if fd is not None:
            os.close(fd)
        for uri in (experiment, store):
            if uri:
                _remove(uri, token)


def run(sweep, experiment: str, store: str | None) -> dict:
    """Check every alive node of the connected Ray cluster for ``sweep`` (see the module
    docstring); writes ``<experiment>/preflight.json`` and raises :class:`PreflightError` listing
    every problem. ``store``: the trials' backbone store (a folder) or None."""
    token = uuid.uuid4().hex[:12]
    store = store if store and "://" not in store else None
    nodes = _alive_nodes()
    t0 = time.time()
    reports, seen = _survey(sweep, experiment, store, nodes, token)
    gpu_nodes = {n["NodeID"][:12]: float(n.get("Resources", {}).get("GPU", 0)) for n in nodes} if sweep.resources.gpu else {}
    problems, notes = evaluate(reports, experiment=experiment, store=store, gpu_nodes=gpu_nodes,
                               versions=library_versions(), code=code_hash(), seen_by_driver=seen)
    notes += constraint_notes(library_versions())
    report = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(time.time() - t0, 2),
              "experiment": experiment, "store": store, "driver_host": socket.gethostname(),
              "driver_libraries": library_versions(), "driver_code": code_hash(),
              "gpus_per_trial": sweep.resources.gpu, "nodes": reports, "problems": problems, "notes": notes,
              "ok": not problems}
    _write_report(experiment, report)
    import sys

    for note in notes:
        print(f"pre-flight note: {note}", file=sys.stderr)
    if problems:
        raise PreflightError(f"the pre-flight found {len(problems)} problem(s) on the cluster's {len(nodes)} node(s); "
                             f"no trial was started (details: {experiment}/{REPORT}):\n  - " + "\n  - ".join(problems))
    hosts = ", ".join(sorted(f"{r['host']} ({r['ip']})" for r in reports))
    print(f"pre-flight: {len(nodes)} node(s) ok — {hosts}; report {experiment}/{REPORT}", flush=True)
    return report

"""The cluster files in sweeps/cluster/ pass Ray's own cluster-config validation (the steps
`ray up` runs before it contacts a cloud: prepare_config -> validate_config), install this
checkout, keep the dashboard on localhost and share storage. No network, no Ray started."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "sweeps" / "cluster"
FILES = ["aws-gpu.yaml", "gcp-gpu.yaml", "local.yaml"]


def load(name):
    return yaml.safe_load((CLUSTER / name).read_text())


def prepared(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(load(name))
    validate_config(config)
    return config


@pytest.mark.parametrize("name", FILES)
def test_passes_rays_validator(name):
    config = prepared(name)
    assert config["cluster_name"].startswith("spectral-ray")
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cpu_head_and_autoscaling_gpu_workers(name):
    config = prepared(name)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = types["gpu_worker"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1
    node = workers["node_config"]
    if name.startswith("aws"):
        assert node["InstanceType"].startswith(("g5", "g4dn", "g6", "p3", "p4", "p5"))
    else:
        assert node["guestAccelerators"][0]["acceleratorCount"] >= 1
        assert workers["resources"]["GPU"] >= 1


def test_local_provider_lists_hosts():
    config = prepared("local.yaml")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and len(config["provider"]["worker_ips"]) >= 1


@pytest.mark.parametrize("name", FILES)
def test_installs_this_checkout_with_shared_storage(name):
    config = prepared(name)
    assert config["file_mounts"]["~/spectral-ray"] == "."
    setup = " ".join(config["setup_commands"])
    assert "-c ~/spectral-ray/constraints/cluster.txt" in setup and "-e ~/spectral-ray" in setup
    assert "SPECTRAL_RAY_STORE=/mnt/shared/" in setup and "SPECTRAL_RAY_CACHE=/mnt/shared/" in setup
    # the cluster's own CUDA torch is kept: nothing installs torch
    assert not any("install" in c and "torch" in c.replace("ray[default,tune]", "") for c in config["setup_commands"])


@pytest.mark.parametrize("name", FILES)
def test_dashboard_bound_to_localhost(name):
    config = prepared(name)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head


@pytest.mark.parametrize("name", FILES)
def test_same_ray_version_as_here(name):
    """Ray needs the same version on every node as on the machine that drives `ray up`."""
    import ray

    setup = " ".join(load(name)["setup_commands"])
    assert f"ray[default,tune]=={ray.__version__}" in setup


def test_validator_rejects_a_broken_file():
    """The check is real: an unknown top-level key fails Ray's schema."""
    import jsonschema

    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("aws-gpu.yaml")
    config["max_wrokers"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", FILES)
def test_one_interpreter_for_setup_and_runtime(name):
    """The first setup command activates the environment in ~/.bashrc (Ray sources it before
    every command: setup, `ray start`, `ray submit`'s `python`); pip runs as `python -m pip`."""
    setup = load(name)["setup_commands"]
    assert "~/.bashrc" in setup[0] and ("activate" in setup[0] or "PATH=" in setup[0])
    joined = " ".join(setup)
    assert " pip install" not in joined.replace("python -m pip install", "")


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_every_node_type_can_write_the_bucket(name):
    """Workers persist their trials' results themselves: each node type has its own identity."""
    config = prepared(name)
    for node_type, spec in config["available_node_types"].items():
        node = spec["node_config"]
        if name.startswith("aws"):
            assert "instance-profile/" in node["IamInstanceProfile"]["Arn"], node_type
        elif node_type != config["head_node_type"]:  # the GCP head gets Ray's own service account
            (account,) = node["serviceAccounts"]
            assert account["email"].endswith(".iam.gserviceaccount.com")
            assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"]


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_gpu_node_types_are_declared(name):
    """`spectral-ray sweep` on the head reads them from ~/ray_bootstrap_config.yaml for its GPU note
    while no GPU node is up yet."""
    from trainables.launcher import declared_gpu_node_types

    assert declared_gpu_node_types(CLUSTER / name) == {"gpu_worker": 1.0}


CONSTRAINTS = CLUSTER.parents[1] / "constraints" / "cluster.txt"


def pins(path=CONSTRAINTS) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def test_cluster_constraints_pin_what_this_checkout_runs():
    """constraints/cluster.txt (what every cluster node installs) pins the libraries the pre-flight
    compares across nodes at the versions of this venv, and leaves the CUDA-specific torch out."""
    from importlib import metadata

    from trainables.preflight import LIBRARIES

    pinned = pins()
    assert "torch" not in pinned and "torchvision" not in pinned and not any(k.startswith("nvidia-") for k in pinned)
    for name in LIBRARIES:
        if name in ("torch", "torchvision"):
            continue
        assert pinned.get(name.lower()) == metadata.version(name), (
            f"{name}: constraints/cluster.txt pins {pinned.get(name.lower())}, this venv runs {metadata.version(name)}; "
            "regenerate the file (its header says how)")


@pytest.mark.parametrize("name", FILES)
def test_cluster_files_install_with_the_constraints(name):
    setup = [c for c in load(name)["setup_commands"] if "-e ~/spectral-ray" in c]
    assert len(setup) == 1 and "-c ~/spectral-ray/constraints/cluster.txt" in setup[0]

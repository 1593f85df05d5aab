"""Entry point for clusters: ``ray submit CLUSTER.yaml sweeps/launch.py -- SWEEP.yaml [options]``
or ``ray job submit --working-dir . -- python sweeps/launch.py SWEEP.yaml``. Same options as
``spectral-ray sweep``."""

import sys

from spectral_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))

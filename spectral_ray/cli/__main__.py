import sys

from spectral_ray.cli import main

sys.exit(main())

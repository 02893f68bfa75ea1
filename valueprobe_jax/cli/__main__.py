import sys

from valueprobe_jax.cli import main

sys.exit(main())

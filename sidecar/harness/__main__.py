import sys

from sidecar.harness.cli import main

sys.exit(main())

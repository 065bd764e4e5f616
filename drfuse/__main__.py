import sys

from drfuse.cli import main

sys.exit(main())

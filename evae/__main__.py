import sys

from evae.cli import main

sys.exit(main())

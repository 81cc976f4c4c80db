"""`python -m quantize`: see quantize/cli.py."""

import sys

from .cli import main

sys.exit(main())

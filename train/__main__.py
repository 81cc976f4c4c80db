"""`python -m train --help`."""

from .cli import main

raise SystemExit(main())

"""``python -m fidkit`` is the ``fidkit`` command."""

from fidkit.cli import main

raise SystemExit(main())

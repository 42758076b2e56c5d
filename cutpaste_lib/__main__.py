"""``python -m cutpaste_lib`` = the ``cutpaste`` command (handy where the package is not installed)."""

from cutpaste_lib.cli import main

raise SystemExit(main())

"""``python -m navstream.cli``: the command line, as the ``navstream`` script runs it."""

from navstream.cli import main

raise SystemExit(main())

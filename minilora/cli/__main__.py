"""``python -m minilora.cli``: the ``minilora`` command (the same as the installed script)."""

import sys

from minilora.cli import main

sys.exit(main())

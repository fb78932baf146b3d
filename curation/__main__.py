from __future__ import annotations

import sys

from curation.cli import main

sys.exit(main())

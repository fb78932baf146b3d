"""``python -m scorer.generation``: the candidate-caption CLI (:mod:`scorer.generation.cli`)."""

import sys

from scorer.generation.cli import main

sys.exit(main())

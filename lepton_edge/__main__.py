from __future__ import annotations

import sys

from lepton_edge.cli import main

sys.exit(main())

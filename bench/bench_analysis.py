"""What the security analysis costs end to end: `vtest.avi` in bench mode through the daemon,
plain against tracking + two zones + a line across the walkway + events (snapshots on), runs
alternated in one process (bench/alternate.py).

    python bench/bench_analysis.py [--rounds 3] [--backend auto] [--precision int8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alternate import REPO, alternate, daemon_run

VTEST = REPO / "samples" / "vtest.avi"
ANALYSIS = {
    "zones": [{"id": "left", "polygon": [[0, 0], [384, 0], [384, 576], [0, 576]]},
              {"id": "right", "polygon": [[384, 0], [768, 0], [768, 576], [384, 576]]}],
    "lines": [{"id": "walkway", "points": [[0, 300], [768, 300]]}],
    "events": {},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="int8")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        def run(name: str) -> dict:
            camera = {"id": "plaza", "url": str(VTEST), "mode": "bench"}
            if name == "analysed":
                camera.update(ANALYSIS)
            got = daemon_run({"backend": args.backend, "precision": args.precision,
                              "state_dir": str(Path(tmp) / "state"), "cameras": [camera]})
            return got

        alternate(("plain", "analysed"), args.rounds, run)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Draw examples/quickstart.yaml as docs/quickstart.svg, the picture the README shows.

The SVG is a documentation artifact checked in on purpose (GitHub renders the README from
the repository, nothing builds it there): run this script, or ``make docs-graph``, after
changing the quickstart, the renderer (``hyperplane/fabric/picture.py``, ``draw.py``) or
Graphviz, and commit the result.  It needs neither root nor anything up: the file is drawn
as ``hyperplane graph examples/quickstart.yaml`` draws it, with the ENIs ``up`` would make
(``model.enis.plan_enis``: one per subnet and security-group set, the same ids and
addresses), through Graphviz's ``dot -Tsvg``.  Run from the repository root:

    .venv/bin/python scripts/readme_graph.py [--check]

``--check`` writes nothing and exits 1 when docs/quickstart.svg differs from a fresh draw.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hyperplane.emulator import graphs

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "examples/quickstart.yaml"  # as written in the picture's title
TARGET = ROOT / "docs" / "quickstart.svg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the checked-in SVG is not what the renderer draws now")
    args = parser.parse_args()
    os.chdir(ROOT)  # the file's code directory is resolved against the current directory
    drawn = graphs.render(graphs.view(SOURCE), "svg")
    if args.check:
        same = TARGET.exists() and TARGET.read_text() == drawn
        print(f"{TARGET.relative_to(ROOT)}: {'up to date' if same else 'OUT OF DATE'}")
        return 0 if same else 1
    TARGET.write_text(drawn)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

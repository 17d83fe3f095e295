"""``hyperplane graph``: the running topology, or a topology file, as a picture (side
effects: reads the state database or the file, runs Graphviz's ``dot`` for SVG).

``view(file)`` is what the picture shows: with ``file``, that file's topology and the ENIs
``up`` would make (``fabric.picture.file_view``); without, the running topology, its ENIs
(every state) and its functions as the controller recorded them (state, environments).
``render(view, fmt)`` writes it as DOT or mermaid (``fabric.draw``, pure), or as SVG
through ``dot -Tsvg`` (Debian's ``graphviz``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

from hyperplane.emulator import running
from hyperplane.emulator.requests import nothing_up
from hyperplane.errors import UsageError
from hyperplane.fabric import draw, picture
from hyperplane.model.topology import Topology

FORMATS = ("dot", "svg", "mermaid")
SUFFIXES = {".svg": "svg", ".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot",
            ".gv": "dot"}
DOT_TIMEOUT = 60.0


def _account(topology: Topology, record_account: str, vpc_id: str | None) -> str:
    if record_account:
        return record_account
    try:
        return topology.vpc_account(vpc_id) if vpc_id else topology.account
    except KeyError:
        return topology.account


def running_view(recorded: running.Running, title: str = "") -> picture.View:
    """The running topology: its ENIs and its functions with state and environments."""
    topology = recorded.topology
    envs = Counter(e.function for e in recorded.envs)
    functions = tuple(
        picture.FunctionView(fn.name, _account(topology, fn.account, fn.vpc_id),
                             fn.vpc is not None, fn.state, envs[fn.name],
                             "legacy: an ENI per environment"
                             if fn.networking == "legacy" and fn.vpc is not None else "")
        for fn in recorded.functions)
    return picture.View(topology, tuple(recorded.enis), functions,
                        title or recorded.data["source"])


def view(file: str | None = None) -> picture.View:
    """``file``'s view (nothing needs to run), else the running topology's."""
    if file is not None:
        return picture.file_view(running.load_source(file).topology, file)
    recorded = running.current()
    if recorded is None:
        raise UsageError(f"{nothing_up()}, or draw a file: `hyperplane graph FILE`")
    return running_view(recorded)


def svg(dot_text: str) -> str:
    """``dot -Tsvg`` of a DOT text."""
    if shutil.which("dot") is None:
        raise UsageError("SVG needs Graphviz's `dot` (Debian package graphviz; `make install` "
                         "installs it); --format dot or mermaid need nothing")
    done = subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True,
                          timeout=DOT_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot -Tsvg failed: {done.stderr.strip()}")
    return done.stdout


def render(picture_view: picture.View, fmt: str) -> str:
    """The view as ``dot``, ``svg`` or ``mermaid`` text."""
    scene = picture.scene(picture_view)
    if fmt == "mermaid":
        return draw.mermaid(scene)
    text = draw.dot(scene)
    return svg(text) if fmt == "svg" else text


def format_for(fmt: str | None, output: str | None) -> str:
    """The format asked, else the one ``output``'s suffix names, else DOT."""
    if fmt:
        return fmt
    for suffix, named in SUFFIXES.items():
        if output and output.lower().endswith(suffix):
            return named
    return "dot"

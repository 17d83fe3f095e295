"""A ``picture.Scene`` written as Graphviz DOT or as a mermaid flowchart (pure).

``dot(scene)`` is the source of truth: clusters as ``subgraph cluster_...``, one style per
kind of node and edge, a legend under the title; ``dot -Tsvg`` draws it.  ``mermaid(scene)``
is the same graph as a ``flowchart LR`` (subgraphs, shapes, ``classDef`` colours and
``linkStyle``), for Markdown that renders mermaid.  Both are deterministic: the same scene
gives the same text.
"""

from __future__ import annotations

from hyperplane.fabric.picture import Cluster, Edge, Node, Scene

FONT = "Helvetica"
NODE_STYLE = {
    "function": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffd8a8",
                 "color": "#d9822b"},
    "eni": {"shape": "box", "style": "filled", "fillcolor": "#cfe2ff", "color": "#3b6ea5"},
    "host": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff"},
    "database": {"shape": "cylinder", "style": "filled", "fillcolor": "#ffffff"},
    "sg": {"shape": "octagon", "style": "filled", "fillcolor": "#fde2e2", "color": "#c0392b"},
    "natgw": {"shape": "hexagon", "style": "filled", "fillcolor": "#e2f0d9"},
    "igw": {"shape": "invhouse", "style": "filled", "fillcolor": "#e2f0d9"},
    "internet": {"shape": "ellipse", "style": "filled", "fillcolor": "#e8e8e8"},
    "routes": {"shape": "note", "style": "filled", "fillcolor": "#fffbe6"},
}
MUTED = {"style": "dashed,filled", "fillcolor": "#eeeeee"}
CLUSTER_STYLE = {
    "account": {"style": "dashed", "color": "#666666"},
    "lambda": {"style": "rounded,filled", "fillcolor": "#fff4e6", "color": "#d9822b"},
    "vpc": {"style": "rounded,filled", "fillcolor": "#f0f7f0", "color": "#2c7a2c"},
    "subnet": {"style": "rounded,filled", "fillcolor": "#ffffff", "color": "#7aa67a"},
}
EDGE_STYLE = {
    "uses": {"color": "#d9822b"},
    "egress": {"color": "#d9822b", "fontcolor": "#d9822b", "style": "dashed"},
    "sg_in": {"color": "#c0392b", "fontcolor": "#c0392b", "style": "dashed"},
    "sg_out": {"color": "#c0392b", "fontcolor": "#c0392b", "style": "dotted"},
    "route": {"color": "#2c7a2c", "fontcolor": "#2c7a2c"},
    "uplink": {"color": "#2c7a2c", "fontcolor": "#2c7a2c"},
}
GRAPH = {"rankdir": "LR", "fontname": FONT, "fontsize": "11", "labelloc": "t",
         "nodesep": "0.25", "ranksep": "0.6", "newrank": "true"}
LEGEND = ("orange: a function to the ENIs it shares",
          "red dashed: a security-group rule naming a group (traffic may start at the tail)")


# -- DOT ----------------------------------------------------------------------------------------
def quote(text: str) -> str:
    """A DOT string: backslashes and quotes escaped, newlines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{k}={quote(v)}" for k, v in attrs.items())


def _dot_node(node: Node, indent: str) -> str:
    attrs = {"label": "\n".join(node.lines), **NODE_STYLE[node.kind]}
    if node.muted:
        attrs.update(MUTED)
    return f"{indent}{quote(node.id)} [{_attrs(attrs)}];"


def _dot_cluster(cluster: Cluster, depth: int) -> list[str]:
    indent = "  " * depth
    attrs = {"label": cluster.label, **CLUSTER_STYLE[cluster.kind]}
    lines = [f"{indent}subgraph {quote('cluster_' + cluster.id)} {{",
             f"{indent}  graph [{_attrs(attrs)}];"]
    lines += [_dot_node(n, indent + "  ") for n in cluster.nodes]
    for inner in cluster.clusters:
        lines += _dot_cluster(inner, depth + 1)
    return [*lines, f"{indent}}}"]


def _layout_hints(cluster: Cluster) -> list[str]:
    """Invisible edges that put a subnet's hosts after its ENIs (traffic flows that way)."""
    hints = []
    if cluster.kind == "subnet":
        enis = [n.id for n in cluster.nodes if n.kind == "eni"]
        hosts = [n.id for n in cluster.nodes if n.kind in ("host", "database")]
        hints += [f"  {quote(e)} -> {quote(h)} [style=\"invis\"];" for e in enis for h in hosts]
    for inner in cluster.clusters:
        hints += _layout_hints(inner)
    return hints


def dot(scene: Scene) -> str:
    """The scene as a Graphviz ``digraph`` (left to right)."""
    title = "\n".join([scene.title, *LEGEND] if scene.title else LEGEND)
    lines = ["digraph hyperplane {",
             f"  graph [{_attrs({**GRAPH, 'label': title})}];",
             f"  node [{_attrs({'fontname': FONT, 'fontsize': '10'})}];",
             f"  edge [{_attrs({'fontname': FONT, 'fontsize': '9'})}];"]
    for cluster in scene.clusters:
        lines += _dot_cluster(cluster, 1)
    lines += [_dot_node(n, "  ") for n in scene.nodes]
    for edge in scene.edges:
        attrs = {**EDGE_STYLE[edge.kind], **({"label": edge.label} if edge.label else {})}
        lines.append(f"  {quote(edge.src)} -> {quote(edge.dst)} [{_attrs(attrs)}];")
    for cluster in scene.clusters:
        lines += _layout_hints(cluster)
    return "\n".join([*lines, "}"]) + "\n"


# -- mermaid ------------------------------------------------------------------------------------
MERMAID_SHAPE = {"function": ('(["', '"])'), "eni": ('["', '"]'), "host": ('["', '"]'),
                 "database": ('[("', '")]'), "sg": ('{{"', '"}}'), "natgw": ('[/"', '"/]'),
                 "igw": ('>"', '"]'), "internet": ('(("', '"))'), "routes": ('["', '"]')}
MERMAID_ARROW = {"uses": "-->", "egress": "-.->", "sg_in": "-.->", "sg_out": "-.->",
                 "route": "-->", "uplink": "-->"}


def mermaid_text(text: str) -> str:
    """Text inside a mermaid quoted label: its entity codes for what would end it."""
    for char, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def _mermaid_node(node: Node, indent: str) -> str:
    start, end = MERMAID_SHAPE[node.kind]
    return f"{indent}{node.id}{start}{'<br/>'.join(mermaid_text(t) for t in node.lines)}{end}"


def _mermaid_cluster(cluster: Cluster, depth: int) -> list[str]:
    indent = "  " * depth
    lines = [f'{indent}subgraph {cluster.id} ["{mermaid_text(cluster.label)}"]']
    lines += [_mermaid_node(n, indent + "  ") for n in cluster.nodes]
    for inner in cluster.clusters:
        lines += _mermaid_cluster(inner, depth + 1)
    return [*lines, f"{indent}end"]


def _mermaid_classes(scene: Scene) -> list[str]:
    lines = []
    nodes = scene.all_nodes()
    for kind, style in NODE_STYLE.items():
        members = [n.id for n in nodes if n.kind == kind and not n.muted]
        if members:
            lines.append(f"  classDef {kind} fill:{style['fillcolor']},"
                         f"stroke:{style.get('color', '#333333')}")
            lines.append(f"  class {','.join(members)} {kind}")
    muted = [n.id for n in nodes if n.muted]
    if muted:
        lines += [f"  classDef muted fill:{MUTED['fillcolor']},stroke-dasharray:4 2",
                  f"  class {','.join(muted)} muted"]
    return lines


def _mermaid_edge(edge: Edge) -> str:
    arrow = MERMAID_ARROW[edge.kind]
    label = f'|"{mermaid_text(edge.label)}"|' if edge.label else ""
    return f"  {edge.src} {arrow}{label} {edge.dst}"


def mermaid(scene: Scene) -> str:
    """The scene as a mermaid ``flowchart LR``."""
    lines = ["flowchart LR"] + ([f"  %% {scene.title}"] if scene.title else [])
    for cluster in scene.clusters:
        lines += _mermaid_cluster(cluster, 1)
    lines += [_mermaid_node(n, "  ") for n in scene.nodes]
    lines += [_mermaid_edge(e) for e in scene.edges]
    lines += _mermaid_classes(scene)
    for kind, style in EDGE_STYLE.items():
        indexes = [str(i) for i, e in enumerate(scene.edges) if e.kind == kind]
        if indexes:
            lines.append(f"  linkStyle {','.join(indexes)} stroke:{style['color']}")
    return "\n".join(lines) + "\n"

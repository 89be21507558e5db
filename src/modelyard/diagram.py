"""A system's architecture as a picture, computed from its graph (never drawn by hand).

`layout` places every node of the graph (`topology.reachable`: each Model once, wrappers
folded in) in columns by depth, from the entry point on the left to the leaves on the right,
and orders each column so edges cross little; `to_svg` draws it as a standalone SVG (for the
demo's HTML report and the README). Patterns, local models and hosted models get their own
colours; a disabled model (an optional provider without its key) is drawn dashed; an edge to a
fallback member that is only tried when the ones before it fail is dashed too. Hovering over a
node shows everything `Model.describe()` says about it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from modelyard.model import Model
from modelyard.topology import edges, reachable, tries_in_turn, unwrap

PATTERNS = frozenset(
    {"router", "specialist", "cascade", "fallback", "pipeline", "ensemble", "balance"}
)
HOSTED = frozenset({"openai", "anthropic", "gemini"})
DETAIL_KEYS = (
    "id",
    "gguf",
    "function",
    "method",
    "entries",
    "min_confidence",
    "default",
    "strategy",
)

NODE_HEIGHT = 54
BEND_HEIGHT = 8
ROW_GAP = 18
COLUMN_GAP = 96
MARGIN = 24
NAME_CHAR = 7.9
SMALL_CHAR = 6.1
ROLE_CHAR = 5.9
ROLE_WIDTH = 20
"""Characters of role text on one line before several roles wrap."""


@dataclass(slots=True)
class Node:
    """A placed node: its model, box and what the box says."""

    model: Model
    column: int
    name: str
    kind: str
    detail: str
    tooltip: str
    category: str
    """pattern, local, hosted or disabled."""
    width: float = 0.0
    x: float = 0.0
    y: float = 0.0
    """Top left corner of the box."""


@dataclass(frozen=True, slots=True)
class Link:
    """An edge: the points it passes through (parent's port, bends, child's port) and its role."""

    points: tuple[tuple[float, float], ...]
    role: str
    dashed: bool


@dataclass(slots=True)
class Layout:
    """Placed nodes and links, and the size of the drawing."""

    nodes: list[Node] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


def _category(model: Model) -> str:
    from modelyard.providers.local_basic import DisabledModel

    if isinstance(model, DisabledModel):
        return "disabled"
    kind = model.info.kind
    if kind in PATTERNS:
        return "pattern"
    return "hosted" if model.info.provider in HOSTED or kind in HOSTED else "local"


def _detail(details: dict[str, object]) -> str:
    for key in DETAIL_KEYS:
        if key in details:
            value = str(details[key])
            if key == "function":  # package.module:function -> module:function
                module, _, function = value.partition(":")
                value = f"{module.rsplit('.', 1)[-1]}:{function}"
            return {
                "min_confidence": f"min confidence {value}",
                "default": f"default: {value}",
                "entries": f"{value} entries",
            }.get(key, value)
    return ""


def _node(model: Model, column: int) -> Node:
    details = model.describe()
    kind = str(details.pop("kind", model.info.kind))
    detail = _detail(details)
    category = _category(model)
    if category == "disabled":
        reason = str(getattr(model, "reason", ""))
        missing = re.search(r"environment variable (\w+) is not set", reason)
        detail = f"disabled until {missing.group(1)} is set" if missing else "disabled"
    tooltip = "\n".join([f"{model.name} ({kind})", *(f"{k}: {v}" for k, v in details.items())])
    node = Node(model, column, model.name, kind, _clip(detail, 44), tooltip, category)
    longest = max(len(node.name) * NAME_CHAR, len(node.kind) * SMALL_CHAR)
    node.width = max(118.0, longest + 24, len(node.detail) * SMALL_CHAR + 24)
    return node


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class _Graph:
    """The graph being laid out: real nodes and the bend points of long edges ("dummies"),
    each a key in `column`, `up` and `down`; y is the centre height of each key."""

    column: dict[int, int] = field(default_factory=dict)
    height: dict[int, float] = field(default_factory=dict)
    up: dict[int, list[int]] = field(default_factory=dict)
    down: dict[int, list[int]] = field(default_factory=dict)
    y: dict[int, float] = field(default_factory=dict)
    paths: list[tuple[list[int], str, bool]] = field(default_factory=list)
    """Every edge as the keys it passes through, its role, and whether it is dashed."""

    def add(self, key: int, column: int, height: float) -> None:
        self.column[key] = column
        self.height[key] = height
        self.up[key] = []
        self.down[key] = []

    def connect(self, a: int, b: int) -> None:
        self.down[a].append(b)
        self.up[b].append(a)


Children = dict[int, list[tuple[Model, str]]]
"""Each node's children (by the node's id) with their roles."""


def _depths(models: Sequence[Model], children: Children) -> dict[int, int]:
    """Each node's column: its longest distance from the root (a DAG: at most len rounds)."""
    column = {id(n): 0 for n in models}
    changed = True
    while changed:
        changed = False
        for node in models:
            for child, _ in children[id(node)]:
                if column[id(child)] < column[id(node)] + 1:
                    column[id(child)] = column[id(node)] + 1
                    changed = True
    return column


def _graph(root: Model) -> tuple[list[Model], _Graph]:
    models = list(reachable(root))
    children = {id(n): [(unwrap(e.child), e.role) for e in edges(n)] for n in models}
    depth = _depths(models, children)
    graph = _Graph()
    for model in models:
        graph.add(id(model), depth[id(model)], NODE_HEIGHT)
    dummies = itertools.count(-1, -1)
    for model in models:
        parent = id(model)
        for child, role in children[parent]:
            keys = [parent]
            for column in range(depth[parent] + 1, depth[id(child)]):
                bend = next(dummies)
                graph.add(bend, column, BEND_HEIGHT)
                keys.append(bend)
            keys.append(id(child))
            for a, b in itertools.pairwise(keys):
                graph.connect(a, b)
            fallback = tries_in_turn(model)
            dashed = fallback and role not in ("", "1st")
            graph.paths.append((keys, "" if fallback else role, dashed))
    return models, graph


def _spread(graph: _Graph, order: list[int], desired: dict[int, float]) -> None:
    """Place one column's keys at their desired heights, in order and apart, the column as a
    whole as close to its desired place as it can be."""
    placed: list[float] = []
    for i, key in enumerate(order):
        want = desired[key]
        if i:
            previous = order[i - 1]
            gap = (graph.height[previous] + graph.height[key]) / 2 + ROW_GAP
            want = max(want, placed[-1] + gap)
        placed.append(want)
    shift = sum(desired[k] - p for k, p in zip(order, placed, strict=True)) / len(order)
    for key, value in zip(order, placed, strict=True):
        graph.y[key] = value + shift


def _mean(graph: _Graph, keys: list[int], own: int) -> float:
    return sum(graph.y[k] for k in keys) / len(keys) if keys else graph.y[own]


def layout(root: Model) -> Layout:
    """Place the graph under `root`: columns by depth, rows ordered to keep edges short."""
    models, graph = _graph(root)
    columns: list[list[int]] = [[] for _ in range(max(graph.column.values()) + 1)]
    for key in graph.column:
        columns[graph.column[key]].append(key)
    for col in columns:
        top = 0.0
        for key in col:
            graph.y[key] = top
            top += graph.height[key] + ROW_GAP
    for _ in range(6):  # barycentre sweeps: towards parents, then towards children
        for col in columns[1:]:
            desired = {k: _mean(graph, graph.up[k], k) for k in col}
            col.sort(key=lambda k: desired[k])
            _spread(graph, col, desired)
        for col in reversed(columns[:-1]):
            desired = {k: _mean(graph, graph.down[k], k) for k in col}
            col.sort(key=lambda k: desired[k])
            _spread(graph, col, desired)
    return _place(models, graph, columns)


def _place(models: Sequence[Model], graph: _Graph, columns: list[list[int]]) -> Layout:
    nodes = {id(m): _node(m, graph.column[id(m)]) for m in models}
    top = min(graph.y[k] - graph.height[k] / 2 for k in graph.y)
    spans: list[tuple[float, float]] = []
    gaps = _gaps(graph, len(columns))
    x = float(MARGIN)
    for i, col in enumerate(columns):
        x += gaps[i]
        width = max((nodes[k].width for k in col if k in nodes), default=40.0)
        for key in col:
            if key in nodes:
                nodes[key].x = x + (width - nodes[key].width) / 2
                nodes[key].y = graph.y[key] - NODE_HEIGHT / 2 - top + MARGIN
        spans.append((x, x + width))
        x += width
    out = Layout(nodes=[nodes[k] for col in columns for k in col if k in nodes])
    ports = _ports(graph, nodes)
    for keys, role, dashed in graph.paths:
        points = [ports[(keys[0], keys[1])]]
        for key in keys[1:-1]:
            left, right = spans[graph.column[key]]
            level = graph.y[key] - top + MARGIN
            points.extend([(left, level), (right, level)])
        points.append(ports[(keys[-1], keys[-2])])
        out.links.append(Link(tuple(points), role, dashed))
    out.width = x + MARGIN
    out.height = max(n.y for n in out.nodes) + NODE_HEIGHT + MARGIN
    return out


def role_lines(role: str) -> list[str]:
    """A role as the lines it is written on: several roles (`a | b | c`) wrap between them."""
    lines: list[str] = []
    for part in role.split(" | "):
        if lines and len(lines[-1]) + 3 + len(part) <= ROLE_WIDTH:
            lines[-1] += " | " + part
        else:
            lines.append(part)
    return lines


def _gaps(graph: _Graph, count: int) -> list[float]:
    """The space before each column: room for the longest role written on an edge into it."""
    gaps = [0.0] + [float(COLUMN_GAP)] * (count - 1)
    for keys, role, _ in graph.paths:
        column = graph.column[keys[-1]]
        longest = max((len(line) for line in role_lines(role)), default=0)
        gaps[column] = max(gaps[column], longest * ROLE_CHAR + 44)
    return gaps


def _ports(graph: _Graph, nodes: dict[int, Node]) -> dict[tuple[int, int], tuple[float, float]]:
    """Where each edge leaves or enters a box: spread along its right (outgoing) or left
    (incoming) side in the order of the other end's height, so edges do not bunch up."""
    ports: dict[tuple[int, int], tuple[float, float]] = {}
    for key, node in nodes.items():
        for others, side in ((graph.down[key], node.x + node.width), (graph.up[key], node.x)):
            ordered = sorted(others, key=lambda k: graph.y[k])
            room = NODE_HEIGHT * 0.7
            for i, other in enumerate(ordered):
                offset = (i + 1) / (len(ordered) + 1) - 0.5
                ports[(key, other)] = (side, node.y + NODE_HEIGHT / 2 + offset * room)
    return ports


# --- SVG ------------------------------------------------------------------------------------

STYLE = {
    "pattern": ("#e8eefc", "#3f63c7"),
    "local": ("#e7f5ea", "#2e7d43"),
    "hosted": ("#fff1e0", "#d9720b"),
    "disabled": ("#f4f4f4", "#9a9a9a"),
}
LEGEND = (
    ("pattern", "pattern (routes, cascades, fallbacks)"),
    ("local", "model on this machine"),
    ("hosted", "hosted model"),
    ("disabled", "disabled (no API key)"),
)
FONT = "font-family='Inter,Segoe UI,Helvetica,Arial,sans-serif'"


def _link_svg(link: Link) -> list[str]:
    (x1, y1), *bends, (x2, y2) = link.points
    points = [(x1, y1), *bends, (x2, y2)]
    path = f"M{x1:.1f},{y1:.1f}"
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        if ay == by:
            path += f" L{bx:.1f},{by:.1f}"
            continue
        bend = (bx - ax) / 2
        path += f" C{ax + bend:.1f},{ay:.1f} {bx - bend:.1f},{by:.1f} {bx:.1f},{by:.1f}"
    dash = " stroke-dasharray='6 4'" if link.dashed else ""
    out = [
        f"<path d='{path}' fill='none' stroke='#8a94a6' stroke-width='1.4'{dash} "
        "marker-end='url(#arrow)'/>"
    ]
    # Just before the child's box, where each incoming edge has a port of its own; a long
    # role stacks upwards from the edge.
    lines = role_lines(link.role) if link.role else []
    for i, line in enumerate(reversed(lines)):
        out.append(
            f"<text x='{x2 - 8:.1f}' y='{y2 - 4 - 12 * i:.1f}' {FONT} font-size='10.5' "
            "fill='#5b3fa0' stroke='#ffffff' stroke-width='3' paint-order='stroke' "
            f"text-anchor='end'>{escape(line)}</text>"
        )
    return out


def _node_svg(node: Node) -> list[str]:
    fill, stroke = STYLE[node.category]
    dash = " stroke-dasharray='5 3'" if node.category == "disabled" else ""
    radius = 14 if node.category == "pattern" else 5
    cx = node.x + node.width / 2
    colour = "#777777" if node.category == "disabled" else "#1d2433"
    return [
        f"<g><title>{escape(node.tooltip)}</title>",
        f"<rect x='{node.x:.1f}' y='{node.y:.1f}' width='{node.width:.1f}' "
        f"height='{NODE_HEIGHT}' rx='{radius}' fill='{fill}' stroke='{stroke}' "
        f"stroke-width='1.6'{dash}/>",
        f"<text x='{cx:.1f}' y='{node.y + 19:.1f}' {FONT} font-size='13' font-weight='600' "
        f"fill='{colour}' text-anchor='middle'>{escape(node.name)}</text>",
        f"<text x='{cx:.1f}' y='{node.y + 34:.1f}' {FONT} font-size='10.5' fill='{stroke}' "
        f"text-anchor='middle'>{escape(node.kind)}</text>",
        f"<text x='{cx:.1f}' y='{node.y + 47:.1f}' {FONT} font-size='10' fill='#6b7280' "
        f"text-anchor='middle'>{escape(node.detail)}</text>",
        "</g>",
    ]


def _legend_svg(layout: Layout) -> list[str]:
    y = layout.height + 4
    x = float(MARGIN)
    out = []
    for category, words in LEGEND:
        fill, stroke = STYLE[category]
        dash = " stroke-dasharray='4 2'" if category == "disabled" else ""
        out.append(
            f"<rect x='{x:.1f}' y='{y:.1f}' width='16' height='12' rx='3' fill='{fill}' "
            f"stroke='{stroke}'{dash}/>"
        )
        out.append(
            f"<text x='{x + 22:.1f}' y='{y + 10:.1f}' {FONT} font-size='11' fill='#444'>"
            f"{escape(words)}</text>"
        )
        x += 34 + len(words) * 6.2
    out.append(
        f"<path d='M{x:.1f},{y + 6:.1f} h28' stroke='#8a94a6' stroke-width='1.4' "
        "stroke-dasharray='6 4'/>"
    )
    out.append(
        f"<text x='{x + 34:.1f}' y='{y + 10:.1f}' {FONT} font-size='11' fill='#444'>"
        "tried only when the member before it fails</text>"
    )
    return out


def to_svg(layout: Layout, *, title: str | None = None) -> str:
    """The layout as a standalone SVG document."""
    width = max(layout.width, 860.0)
    height = layout.height + 30
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
        f"viewBox='0 0 {width:.0f} {height:.0f}' role='img'>",
        f"<title>{escape(title or 'architecture')}</title>",
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "fill='#8a94a6'/></marker></defs>",
        f"<rect width='{width:.0f}' height='{height:.0f}' fill='#ffffff'/>",
    ]
    for link in layout.links:
        parts.extend(_link_svg(link))
    for node in layout.nodes:
        parts.extend(_node_svg(node))
    parts.extend(_legend_svg(layout))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def system_svg(system: Model) -> str:
    """The architecture diagram of `system` as SVG."""
    return to_svg(layout(system), title=f"{system.name}: architecture")

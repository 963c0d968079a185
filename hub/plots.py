"""Small inline SVG charts for the hub's pages: no build step, no script, nothing from the internet.

    svg = line_chart(["v0", "v1", "v2"], {"overall": [0.62, 0.81, 0.88], "night": [0.40, 0.70, 0.85]})
"""

from __future__ import annotations

from html import escape

# Colour-blind-safe (Okabe-Ito); the first series (overall) is black and drawn thicker.
COLOURS = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442")


def line_chart(xs: list[str], series: dict[str, list[float | None]], *, width: int = 560, height: int = 240,
               y_label: str = "accuracy") -> str:
    """One line per series over categorical xs, y in [0, 1]; None leaves a gap. -> an <svg> element."""
    left, right, top, bottom = 44, 110, 12, 28
    pw, ph = width - left - right, height - top - bottom
    step = pw / max(1, len(xs) - 1)
    x_at = lambda i: left + (i * step if len(xs) > 1 else pw / 2)  # noqa: E731
    y_at = lambda v: top + ph * (1.0 - v)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(y_label)} per model version" class="chart">']
    for g in (0.0, 0.25, 0.5, 0.75, 1.0):  # grid and y axis
        y = y_at(g)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{g:.2f}</text>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{x_at(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="11">{escape(x)}</text>')
    for k, (name, values) in enumerate(series.items()):
        colour, thick = COLOURS[k % len(COLOURS)], 3 if k == 0 else 1.5
        points = [(x_at(i), y_at(v), v) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{thick}" points="{path}"/>')
        for (x, y, v), i in zip(points, [i for i, v in enumerate(values) if v is not None]):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                       f'<title>{escape(name)} {escape(xs[i])}: {v:.3f}</title></circle>')
        ly = top + 14 * k + 8
        out.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 26}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="{thick}"/><text x="{left + pw + 30}" y="{ly + 4}" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)

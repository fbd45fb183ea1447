"""Charts as SVG rendered on the server: no chart library and nothing from a CDN, so the workspace runs offline
and the figures in the page are exactly the ones the server computed. Each chart carries `data-testid`, a
<title> and an aria-label for screen readers; every label from the data is escaped."""
from __future__ import annotations

from typing import Optional, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 220, 48, 42, 12
COLOURS = ("#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad")


def _number(value: float, percent: bool) -> str:
    return f"{value:.0%}" if percent else f"{value:g}"


def _frame(testid: str, title: str, body: list[str], series: Sequence[str]) -> Markup:
    legend = "".join(f'<text x="{LEFT + 130 * i + 14}" y="{HEIGHT - 4}" class="legend">{escape(name)}</text>'
                     f'<rect x="{LEFT + 130 * i}" y="{HEIGHT - 13}" width="10" height="10" fill="{COLOURS[i % 4]}"/>'
                     for i, name in enumerate(series))
    return Markup(f'<svg data-testid="{escape(testid)}" class="chart" role="img" aria-label="{escape(title)}" '
                  f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
                  + "".join(body) + legend + "</svg>")


def _axis(top: float, percent: bool) -> list[str]:
    plot_h = HEIGHT - BOTTOM - TOP
    return [f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" y2="{TOP + plot_h}" class="axis"/>',
            f'<text x="{LEFT - 4}" y="{TOP + 8}" class="tick" text-anchor="end">{_number(top, percent)}</text>',
            f'<text x="{LEFT - 4}" y="{TOP + plot_h}" class="tick" text-anchor="end">0</text>']


def bars(testid: str, title: str, rows: Sequence[tuple[str, Sequence[Optional[float]]]], series: Sequence[str],
         percent: bool = False) -> Markup:
    """Grouped bars: one group per row (a queue, a channel), one bar per series (open, overdue)."""
    top = 1.0 if percent else max([v or 0 for _, values in rows for v in values] + [1])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    group = plot_w / max(len(rows), 1)
    bar = group * 0.8 / max(len(series), 1)
    body = _axis(top, percent)
    for i, (label, values) in enumerate(rows):
        x0 = LEFT + i * group + group * 0.1
        for j, value in enumerate(values):
            h = plot_h * (value or 0) / top
            body.append(f'<rect x="{x0 + j * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                        f'fill="{COLOURS[j % 4]}"><title>{escape(label)} {escape(series[j])}: '
                        f'{"-" if value is None else _number(value, percent)}</title></rect>')
        body.append(f'<text x="{x0 + group * 0.4:.1f}" y="{TOP + plot_h + 13}" class="tick" text-anchor="middle">'
                    f'{escape(label[:14])}</text>')
    return _frame(testid, title, body, series)


def lines(testid: str, title: str, labels: Sequence[str], series: dict[str, Sequence[Optional[float]]],
          percent: Sequence[bool], marks: Sequence[int] = ()) -> Markup:
    """Lines over time, each series scaled to its own maximum (a count and a share on one chart); `marks` are the
    indices of labels with an alert spike, drawn as red dots on the first series."""
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(labels) - 1, 1)
    body = _axis(max([v or 0 for v in next(iter(series.values()), [])] + [1]), percent[0] if percent else False)
    first: list[tuple[float, float]] = []
    for j, (name, values) in enumerate(series.items()):
        top = 1.0 if percent[j] else max([v or 0 for v in values] + [1])
        points = [(LEFT + i * step, TOP + plot_h - plot_h * v / top) for i, v in enumerate(values) if v is not None]
        first = first or points
        body.append(f'<polyline fill="none" stroke="{COLOURS[j % 4]}" stroke-width="2" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
    for i in marks:
        if i < len(first):
            body.append(f'<circle cx="{first[i][0]:.1f}" cy="{first[i][1]:.1f}" r="5" class="spike">'
                        f'<title>{escape(labels[i])}</title></circle>')
    for i in sorted({0, len(labels) // 2, len(labels) - 1}) if labels else []:
        body.append(f'<text x="{LEFT + i * step:.1f}" y="{TOP + plot_h + 13}" class="tick" text-anchor="middle">'
                    f'{escape(labels[i])}</text>')
    return _frame(testid, title, body, list(series))

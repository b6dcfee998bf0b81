"""Small SVG charts written as text: the per-job learning curve (and the benchmarks' plots).

Writing the markup directly costs about a millisecond a chart; matplotlib cost ~0.1 s a chart
plus ~0.3 s to import, paid by every job of a sweep (benchmarks/sweep_overhead.py). The MLflow
UI shows `.svg` artifacts as images, and browsers open them directly. The sweep's analysis,
drawn once per sweep, uses Optuna's matplotlib plots instead (tracking.analysis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
FONT = 'font-family="DejaVu Sans, Arial, sans-serif" font-size="11"'
MARGIN = (58, 16, 26, 40)  # left, right, top, bottom


@dataclass
class Series:
    name: str
    xs: list[float]
    ys: list[float]
    color: str = PALETTE[0]
    markers: bool = False  # dots instead of a line
    width: float = 1.6
    in_legend: bool = True


@dataclass
class Panel:
    """One set of axes; `vlines` are (x, label) dashed markers."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    series: list[Series] = field(default_factory=list)
    vlines: list[tuple[float, str]] = field(default_factory=list)
    integer_x: bool = False  # epochs, trial numbers: no ticks between whole numbers


def ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About n round numbers spanning [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart;
    whole numbers at least 1 apart when `integer`)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = 2 * power if step == 2.5 * power else max(1, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 12) for i in range(count)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _range(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo == hi:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def _panel(p: Panel, x0: float, y0: float, w: float, h: float) -> list[str]:
    left, right, top, bottom = MARGIN
    ax, ay, aw, ah = x0 + left, y0 + top, w - left - right, h - top - bottom
    out = [f'<rect x="{ax}" y="{ay}" width="{aw}" height="{ah}" fill="none" stroke="#444"/>']
    if p.title:
        out.append(
            f'<text x="{ax + aw / 2}" y="{y0 + 16}" text-anchor="middle" {FONT} '
            f'font-weight="bold">{escape(p.title)}</text>'
        )
    xs = _finite([x for s in p.series for x in s.xs] + [x for x, _ in p.vlines])
    ys = _finite([y for s in p.series for y in s.ys])
    (xlo, xhi), (ylo, yhi) = _range(xs), _range(ys)

    def sx(x: float) -> float:
        return round(ax + (x - xlo) / (xhi - xlo) * aw, 2)

    def sy(y: float) -> float:
        return round(ay + ah - (y - ylo) / (yhi - ylo) * ah, 2)

    for t in ticks(xlo, xhi, 6, p.integer_x):
        out.append(f'<line x1="{sx(t)}" y1="{ay}" x2="{sx(t)}" y2="{ay + ah}" stroke="#eee"/>')
        out.append(
            f'<text x="{sx(t)}" y="{ay + ah + 14}" text-anchor="middle" {FONT}>{_fmt(t)}</text>'
        )
    for t in ticks(ylo, yhi, 5):
        out.append(f'<line x1="{ax}" y1="{sy(t)}" x2="{ax + aw}" y2="{sy(t)}" stroke="#eee"/>')
        out.append(f'<text x="{ax - 4}" y="{sy(t) + 4}" text-anchor="end" {FONT}>{_fmt(t)}</text>')
    out.append(
        f'<text x="{ax + aw / 2}" y="{y0 + h - 6}" text-anchor="middle" {FONT}>'
        f"{escape(p.xlabel)}</text>"
    )
    out.append(
        f'<text transform="translate({x0 + 12},{ay + ah / 2}) rotate(-90)" '
        f'text-anchor="middle" {FONT}>{escape(p.ylabel)}</text>'
    )
    legend = []
    for x, label in p.vlines:
        out.append(
            f'<line class="vline" x1="{sx(x)}" y1="{ay}" x2="{sx(x)}" y2="{ay + ah}" '
            f'stroke="grey" stroke-dasharray="4 3"/>'
        )
        legend.append(("grey", label, True))
    for s in p.series:
        pairs = zip(s.xs, s.ys, strict=True)
        points = [(sx(x), sy(y)) for x, y in pairs if len(_finite([x, y])) == 2]
        if s.markers:
            out.extend(
                f'<circle cx="{x}" cy="{y}" r="2.6" fill="{s.color}" fill-opacity="0.75"/>'
                for x, y in points
            )
        elif points:
            coords = " ".join(f"{x},{y}" for x, y in points)
            out.append(
                f'<polyline data-name="{escape(s.name)}" points="{coords}" fill="none" '
                f'stroke="{s.color}" stroke-width="{s.width}"/>'
            )
        if s.in_legend:
            legend.append((s.color, s.name, False))
    if legend:
        width = 30 + 6.5 * max(len(label) for _, label, _ in legend)
        out.append(
            f'<rect x="{ax + aw - width - 4}" y="{ay + 2}" width="{width}" '
            f'height="{14 * len(legend) + 4}" fill="white" fill-opacity="0.85"/>'
        )
    for i, (color, label, dashed) in enumerate(legend):
        ly = ay + 12 + 14 * i
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(
            f'<line x1="{ax + aw - width}" y1="{ly - 4}" x2="{ax + aw - width + 18}" '
            f'y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{ax + aw - width + 22}" y="{ly}" {FONT}>{escape(label)}</text>')
    return out


def write(path: Path, panels: list[Panel], width: int = 900, height: int = 350) -> Path:
    """Panels side by side in one SVG file, written in one go."""
    each = width / len(panels)
    body = [line for i, p in enumerate(panels) for line in _panel(p, i * each, 0, each, height)]
    return _save(path, body, width, height)


def _save(path: Path, body: list[str], width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )
    return path

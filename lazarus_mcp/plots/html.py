"""The heatmap and the tracked-token chart as one self-contained HTML page.

Everything is inline: styles, the data (JSON in a script element), a few lines of JavaScript for
the hover card, and the chart as SVG. The page makes no request of any kind, so it opens from a
file, offline, and can be mailed as it is. Cell colours are computed here, so the grid reads
even with scripts disabled; only the hover card needs them.
"""

from __future__ import annotations

import html
import json
import math

from lazarus_mcp.plots.colors import reversed_scale, unit, viridis
from lazarus_mcp.plots.grid import PlotGrid
from lazarus_mcp.plots.labels import clip, label, visible
from lazarus_mcp.runtime.limits import check_interrupt_of_call
from lazarus_mcp.schema import AnalysisResult, TokenEvolution

# matplotlib's tab10, so lines match the PNG chart.
_LINES = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:17px;margin:0 0 4px} .sub{color:#555;margin:0 0 14px}
table.grid{border-collapse:collapse;font:12px ui-monospace,monospace}
table.grid td{width:var(--w);max-width:var(--w);height:22px;text-align:center;overflow:hidden;
 white-space:nowrap;border:1px solid #fff;padding:0 2px;cursor:default}
table.grid td:hover{outline:2px solid #e33;outline-offset:-2px}
table.grid th{font-weight:normal;color:#444;padding:0 6px;white-space:nowrap}
th.pos{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;height:9em;padding:4px 0}
.legend{display:flex;align-items:center;gap:8px;margin:10px 0 18px;color:#444}
.bar{width:220px;height:12px;border:1px solid #999}
#card{position:fixed;display:none;background:#fff;border:1px solid #888;border-radius:6px;
 box-shadow:0 4px 14px #0003;padding:8px 10px;font:12px ui-monospace,monospace;z-index:9;
 pointer-events:none;max-width:420px}
#card table td{padding:0 6px 0 0} #card .h{font-weight:bold;margin-bottom:4px}
.tracks{margin-top:26px}
"""

_SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const card = document.getElementById('card');
const esc = s => s.replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
const pct = p => p >= 0.001 ? (100 * p).toFixed(1) + '%' : p.toExponential(0);
document.querySelectorAll('td[data-r]').forEach(td => {
  td.addEventListener('mousemove', ev => {
    const r = +td.dataset.r, p = +td.dataset.p, c = D.cells[r][p];
    let h = `<div class="h">layer ${esc(D.rows[r])} \\u00b7 position ${D.positions[p]} ` +
      `(${esc(D.tokens[p])})</div><table>`;
    for (const t of c.top) h += `<tr><td>${esc(t[0])}</td><td>${pct(t[1])}</td></tr>`;
    h += `</table><div>entropy ${c.entropy.toFixed(3)} \\u00b7 KL ${c.kl.toFixed(3)}</div>`;
    for (const t of c.tracked) h += `<div>tracked ${esc(t[0])}: ${pct(t[1])}, rank ${t[2]}</div>`;
    card.innerHTML = h; card.style.display = 'block';
    const x = Math.min(ev.clientX + 14, innerWidth - card.offsetWidth - 8);
    const y = Math.min(ev.clientY + 14, innerHeight - card.offsetHeight - 8);
    card.style.left = x + 'px'; card.style.top = y + 'px';
  });
  td.addEventListener('mouseleave', () => { card.style.display = 'none'; });
});
"""


def _rgb(t: float) -> str:
    r, g, b = viridis(t)
    return f"#{r:02x}{g:02x}{b:02x}"


def _cell_data(grid: PlotGrid) -> list[list[dict[str, object]]]:
    out = []
    for r, row in enumerate(grid.cells):
        check_interrupt_of_call()  # a row at a time: the call's deadline stops a page midway
        cells = []
        for p, pred in enumerate(row):
            tracked = [
                [visible(evo.token), evo.layers[r].probability, evo.layers[r].rank]
                for evo in grid.evolutions[p]
            ]
            cells.append(
                {
                    "top": [[visible(t.token), t.probability] for t in pred.top_k],
                    "entropy": pred.entropy,
                    "kl": pred.kl_divergence,
                    "tracked": tracked,
                }
            )
        out.append(cells)
    return out


def _table(grid: PlotGrid) -> str:
    lines = ['<table class="grid">']
    for r in reversed(range(len(grid.row_labels))):  # the last layer on top, as in the PNG
        check_interrupt_of_call()
        cells = []
        for p, value in enumerate(grid.values[r]):
            t = unit(grid, value)
            rgb = viridis(t)
            fg = "black" if (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) > 115 else "white"
            cells.append(
                f'<td data-r="{r}" data-p="{p}" style="background:{_rgb(t)};color:{fg}">'
                f"{html.escape(label(grid.top[r][p], 8))}</td>"
            )
        lines.append(f"<tr><th>{html.escape(grid.row_labels[r])}</th>{''.join(cells)}</tr>")
    heads = "".join(
        f'<th class="pos">{html.escape(label(t, 14))} {p}</th>'
        for p, t in zip(grid.positions, grid.position_tokens, strict=True)
    )
    lines.append(f"<tr><th></th>{heads}</tr></table>")
    return "\n".join(lines)


def _legend(grid: PlotGrid) -> str:
    stops = [_rgb(n / 8) for n in range(9)]
    if reversed_scale(grid.metric):
        stops.reverse()
    low = "rank 1" if grid.metric.value == "rank" else "0"
    values = [v for row in grid.values for v in row]
    high = f"{max(values):.3g}" if grid.metric.value != "probability" else "1"
    return (
        f'<div class="legend">{html.escape(grid.metric_title)}: {low}'
        f'<div class="bar" style="background:linear-gradient(to right,{",".join(stops)})">'
        f"</div>{high}{' (log scale)' if grid.metric.value == 'rank' else ''}</div>"
    )


class _Step:
    """A tick's value in the shape of a step (probability, rank) for the same y mapping."""

    def __init__(self, probability: float, rank: float = 1.0) -> None:
        self.probability = probability
        self.rank = rank


def tracks_svg(evolutions: list[TokenEvolution], width: int = 760, height: int = 260) -> str:
    """Probability (left) and rank on a log scale (right) across the rows, as inline SVG."""
    steps = evolutions[0].layers
    names = ["emb" if s.layer_idx is None else str(s.layer_idx) for s in steps]
    panel = (width - 90) // 2
    top, bottom = 24, height - 34
    worst = max(max(s.rank for s in evo.layers) for evo in evolutions)
    log_high = math.log10(max(10, worst))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">'
    ]

    def x_of(n: int, left: int) -> float:
        return left + (panel - 20) * (n / max(1, len(steps) - 1))

    for left, title, y_of in (
        (50, "probability", lambda s: bottom - (bottom - top) * s.probability),
        (
            80 + panel,
            "rank (log scale, 1 at the top)",
            lambda s: top + (bottom - top) * math.log10(max(1, s.rank)) / log_high,
        ),
    ):
        parts.append(
            f'<rect x="{left}" y="{top}" width="{panel - 20}" height="{bottom - top}" '
            'fill="none" stroke="#bbb"/>'
            f'<text x="{left}" y="{top - 8}">{title}</text>'
        )
        ticks = (
            [(0.0, "0"), (0.5, "0.5"), (1.0, "1")]
            if title == "probability"
            else [(10.0**e, f"{10**e:g}") for e in range(int(log_high) + 1)]
        )
        for value, text in ticks:
            y = y_of(_Step(value)) if title == "probability" else y_of(_Step(1.0, value))
            parts.append(
                f'<line x1="{left - 4}" x2="{left + panel - 20}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#eee"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{text}</text>"
            )
        every = max(1, len(steps) // 12)
        for n in range(0, len(steps), every):
            parts.append(
                f'<text x="{x_of(n, left):.1f}" y="{bottom + 14}" text-anchor="middle">'
                f"{names[n]}</text>"
            )
        for k, evo in enumerate(evolutions):
            points = " ".join(
                f"{x_of(n, left):.1f},{y_of(s):.1f}" for n, s in enumerate(evo.layers)
            )
            colour = _LINES[k % len(_LINES)]
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
    for k, evo in enumerate(evolutions):
        colour = _LINES[k % len(_LINES)]
        parts.append(
            f'<text x="{48 + 130 * k}" y="{height - 4}" fill="{colour}">\u25a0 '
            f"{html.escape(label(evo.token, 14))}</text>"
        )
    parts.append(f'<text x="{width - 8}" y="{height - 4}" text-anchor="end">layer</text></svg>')
    return "".join(parts)


def _page(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(clip(title, 80))}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    ).encode()


def heatmap_page(grid: PlotGrid, result: AnalysisResult) -> bytes:
    data = {
        "rows": grid.row_labels,
        "positions": grid.positions,
        "tokens": [visible(t) for t in grid.position_tokens],
        "cells": _cell_data(grid),
    }
    # "</" could close the script element early; JSON allows "<\/".
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    width = 46 if len(grid.positions) > 40 else 64
    body = [
        f"<h1>{html.escape(result.model.model_id)}</h1>",
        f'<p class="sub">{html.escape(clip(result.prompt, 300))} \u2014 each cell: the top '
        "next-token prediction of a layer at a position (hover for the top-k); "
        "\u2423 is a space, emb the embedding output.</p>",
        _legend(grid),
        f'<div style="--w:{width}px">{_table(grid)}</div>',
    ]
    if result.token_evolutions:
        body.append(
            '<div class="tracks"><h1>Tracked tokens at the last position</h1>'
            f"{tracks_svg(result.token_evolutions)}</div>"
        )
    body.append(
        f'<div id="card"></div><script type="application/json" id="data">{payload}</script>'
    )
    body.append(f"<script>{_SCRIPT}</script>")
    return _page(grid.title, "\n".join(body))


def tracks_page(result: AnalysisResult) -> bytes:
    body = (
        f"<h1>{html.escape(result.model.model_id)}</h1>"
        f'<p class="sub">{html.escape(clip(result.prompt, 300))}</p>'
        f"{tracks_svg(result.token_evolutions)}"
    )
    return _page(f"{result.model.model_id}: tracked tokens", body)

#!/usr/bin/env python3
"""Draws an `outpostctl trace` file (Chrome trace-event JSON) as an SVG: a lane
per actor, a box per handled message, a line from each send to its handling.
For the README's picture; Perfetto (ui.perfetto.dev) or chrome://tracing open
the same file interactively.

  scripts/trace_to_svg.py trace.json out.svg [--start-ms X] [--window-ms W]

Without --start-ms the window starts 1 ms before the first message sent from a
query to the buffer. Standard library only."""

import argparse
import json
import sys
from html import escape

COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
          "#9c755f", "#bab0ac"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("svg")
    p.add_argument("--start-ms", type=float)
    p.add_argument("--window-ms", type=float, default=20.0)
    a = p.parse_args()
    events = json.load(open(a.trace))["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    slices = [e for e in events if e["ph"] == "X"]
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    if not slices:
        sys.exit("no handled messages in " + a.trace)
    if a.start_ms is None:
        first = [s for i, s in starts.items()
                 if names.get(s["tid"], "").startswith("query") and i in ends
                 and names.get(ends[i]["tid"], "").startswith("buffer")]
        t0 = (min(s["ts"] for s in first) if first else min(e["ts"] for e in slices)) - 1000
    else:
        t0 = min(e["ts"] for e in slices) + a.start_ms * 1000
    t1 = t0 + a.window_ms * 1000
    order = lambda tid: ({"query": 0, "buffer": 1, "link": 2, "net-link": 2}.get(names.get(tid, "").split(" ")[0], 3),
                         names.get(tid, ""))
    tids = sorted({e["tid"] for e in slices if t0 <= e["ts"] <= t1}, key=order)
    lane, left, width, top = 26, 260, 900, 40
    x = lambda ts: left + (ts - t0) / (t1 - t0) * width
    y = {tid: top + i * lane for i, tid in enumerate(tids)}
    kinds = sorted({e["name"] for e in slices})
    color = {k: COLORS[i % len(COLORS)] for i, k in enumerate(kinds)}
    h = top + len(tids) * lane + 30 + 18 * ((len(kinds) + 5) // 6)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" height="{h}" '
           f'font-family="monospace" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           '<defs><marker id="a" markerWidth="6" markerHeight="6" refX="5" refY="3" orient="auto">'
           '<path d="M0,0 L6,3 L0,6 z" fill="#555"/></marker></defs>',
           f'<text x="{left}" y="16">outpostctl trace: {a.window_ms:g} ms, a lane per actor, a box per handled '
           f'message, a line from each send to its handling</text>']
    for tid in tids:
        out.append(f'<text x="6" y="{y[tid] + 15}">{escape(names.get(tid, str(tid))[:36])}</text>')
        out.append(f'<line x1="{left}" x2="{left + width}" y1="{y[tid] + lane - 3}" y2="{y[tid] + lane - 3}" '
                   'stroke="#eee"/>')
    for ms in range(0, int(a.window_ms) + 1, max(1, int(a.window_ms) // 10)):
        xx = x(t0 + ms * 1000)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top - 6}" y2="{top + len(tids) * lane}" stroke="#ddd"/>')
        out.append(f'<text x="{xx:.1f}" y="{top - 8}" fill="#888">{ms} ms</text>')
    for e in slices:
        if e["tid"] not in y or not (t0 <= e["ts"] <= t1):
            continue
        w = max(1.5, e["dur"] / (t1 - t0) * width)
        out.append(f'<rect x="{x(e["ts"]):.1f}" y="{y[e["tid"]] + 4}" width="{w:.1f}" height="{lane - 10}" '
                   f'fill="{color[e["name"]]}"><title>{escape(e["name"])} {e["dur"]:.1f} us</title></rect>')
    for i, s in starts.items():
        f = ends.get(i)
        if not f or s["tid"] not in y or f["tid"] not in y or not (t0 <= s["ts"] and f["ts"] <= t1):
            continue
        out.append(f'<line x1="{x(s["ts"]):.1f}" y1="{y[s["tid"]] + lane / 2:.1f}" x2="{x(f["ts"]):.1f}" '
                   f'y2="{y[f["tid"]] + lane / 2:.1f}" stroke="#555" stroke-width="0.7" marker-end="url(#a)"/>')
    ly = top + len(tids) * lane + 24
    for i, k in enumerate(kinds):
        lx = left + (i % 6) * 150
        yy = ly + (i // 6) * 18
        out.append(f'<rect x="{lx}" y="{yy - 9}" width="10" height="10" fill="{color[k]}"/>'
                   f'<text x="{lx + 14}" y="{yy}">{escape(k)}</text>')
    out.append("</svg>")
    open(a.svg, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

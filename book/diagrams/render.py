#!/usr/bin/env python3
"""Renders the book's diagrams: book/diagrams/*.seq and *.blocks to book/src/diagrams/*.svg.

    python3 book/diagrams/render.py           # writes every SVG
    python3 book/diagrams/render.py --check   # exits 1 naming each SVG that is stale or missing

Why a script of our own: CI machines have no graphviz, mermaid or plantuml, and
mdbook-mermaid would need a preprocessor crate to build the book and JavaScript to read it.
This script uses python3's standard library only, so CI installs nothing, and it writes the
same bytes on every machine. Edit the text sources, run it, and commit both.

Sequence diagrams (*.seq), one statement a line, `#` starts a comment:

    title TEXT                           the SVG's <title>, also drawn at the top
    desc TEXT                            the SVG's <desc>, for screen readers (repeatable)
    participant ID "Label" ["sub-label"] a lifeline; columns in order of declaration
    A -> B: label                        a message: a command or an event
    A --> B: label                       a reply or an acknowledgement (dashed)
    A => B: label                        bytes on the socket (thick, blue)
    note A: text   /   note A..B: text   a note over one lifeline, or spanning several
    divider TEXT                         a rule across the diagram that starts a phase

Block diagrams (*.blocks): title and desc as above, then

    columns ID ID ...                    the columns, left to right
    row CAPTION                          starts a row, drawn as a shaded band
    box COL: line | line                 a box in that column; its first line is bold
    gauge COL fill=N max=N: line | ...   a box holding a bar filled to N of max
    mark COL N: label                    a tick on that column's gauge, at N
    link A -> B: label                   an arrow between adjacent columns (->, -->, =>)
    text: paragraph                      a paragraph under the row's boxes

In any text, `code` is set in monospace and " | " breaks the line. Text is wrapped to the
room it has, and the room between lifelines or columns follows what their labels need. Widths are estimated at 0.6 em a character, more than any sans-serif needs,
so text never overlaps; what cannot fit is an error naming the source line.
"""

import argparse
import html
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "src" / "diagrams"

WIDTH = 760  # px: mdBook's content column is 750 px, so the diagrams show at about 1:1
MARGIN = 16  # px around everything
FONT = 13  # px, every label
SMALL = 12  # px, sub-labels, tick labels and the legend
LINE = 18  # px from one line of text to the next
EM = 0.6  # estimated width of a character, in em
PAD = 8  # px inside boxes
NOTE_MAX = 320  # px: the widest note over a single lifeline

STYLE = """
text { font-family: "Helvetica Neue", Helvetica, Arial, "DejaVu Sans", sans-serif;
  font-size: 13px; fill: #1b1f23; }
.code { font-family: Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.bold { font-weight: bold; }
.title { font-size: 15px; font-weight: bold; }
.small { font-size: 12px; fill: #4a5360; }
.halo { paint-order: stroke; stroke: #ffffff; stroke-width: 4px; stroke-linejoin: round; }
.msg { stroke: #1b1f23; stroke-width: 1.5; fill: none; }
.reply { stroke: #57606a; stroke-width: 1.5; stroke-dasharray: 6 4; fill: none; }
.wire { stroke: #1f5fa8; stroke-width: 2.5; fill: none; }
.life { stroke: #8c959f; stroke-width: 1; stroke-dasharray: 3 4; }
.actor, .cell, .bar { fill: #eaf1fb; stroke: #4a6a94; stroke-width: 1.2; }
.bar { fill: #ffffff; }
.level { fill: #9ec5ee; }
.tick { stroke: #b3261e; stroke-width: 2; }
.note { fill: #fff8c5; stroke: #b89a2a; stroke-width: 1; }
.rule { stroke: #8c959f; stroke-width: 1; }
.band, .phase { fill: #f6f8fa; stroke: #d0d7de; stroke-width: 1; }
"""


def marker(kind, shape):
    return (f'<marker id="m-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="10" '
            f'markerHeight="10" markerUnits="userSpaceOnUse" orient="auto">{shape}</marker>')


MARKERS = "\n".join([
    marker("msg", '<path d="M0,1 L10,5 L0,9 z" fill="#1b1f23"/>'),
    marker("reply", '<path d="M1,1 L10,5 L1,9" fill="none" stroke="#57606a" stroke-width="1.5"/>'),
    marker("wire", '<path d="M0,0 L10,5 L0,10 z" fill="#1f5fa8"/>'),
])
ARROW = re.compile(r"^(\w+)\s*(-->|->|=>)\s*(\w+)\s*:\s*(.+)$")
KINDS = {"->": "msg", "-->": "reply", "=>": "wire"}
LEGEND = [("msg", "command or event"), ("reply", "reply or acknowledgement"),
          ("wire", "bytes on the socket")]


class SourceError(Exception):
    """A problem in a diagram source, reported with its file and line."""


# Text: measuring, wrapping and drawing. Backticks mark monospace spans.

def width_of(line, size=FONT, bold=False):
    return len(line.replace("`", "")) * size * (EM + (0.05 if bold else 0))


def wrap(text, room, size=FONT, bold=False):
    """Greedy word wrap to `room` px; a code span cut by a break is closed and reopened."""
    lines = []
    for para in text.split("|"):
        line = ""
        for word in para.split():
            if width_of(word, size, bold) > room:
                raise SourceError(f"{word!r} does not fit in {room:.0f} px")
            trial = f"{line} {word}" if line else word
            if line and width_of(trial, size, bold) > room:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    balanced, inside = [], False
    for line in lines:
        line = ("`" if inside else "") + line
        inside = line.count("`") % 2 == 1
        balanced.append(line + ("`" if inside else ""))
    return balanced


def share(least, most, room, what):
    """Splits `room` px among gaps: each gets its `least`, then the rest in proportion to what
    it lacks to reach its `most`; once every gap has its `most`, the rest is shared evenly."""
    spare = room - sum(least)
    if spare < 0:
        raise SourceError(f"{what} need {-spare:.0f} px more than the diagram's width")
    lack = [m - l for m, l in zip(most, least)]
    if sum(lack) > spare:
        return [l + spare * k / sum(lack) for l, k in zip(least, lack)]
    return [m + (spare - sum(lack)) / len(most) for m in most]


def word_room(label):
    """The room a label needs between two lines or boxes: (its longest word, all of it)."""
    return (max(width_of(w) for w in label.split()) + 3 * PAD, width_of(label) + 3 * PAD)


def num(value):
    return f"{value:.1f}".rstrip("0").rstrip(".")


def esc(text):
    return html.escape(text, quote=True)


def text(x, y, line, anchor="middle", cls=""):
    parts = line.split("`")
    body = "".join(esc(p) if i % 2 == 0 else f'<tspan class="code">{esc(p)}</tspan>'
                   for i, p in enumerate(parts) if p)
    attrs = f' class="{cls}"' if cls else ""
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{attrs}>{body}</text>'


def rect(x, y, w, h, cls, rx=4):
    return (f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" '
            f'rx="{rx}" class="{cls}"/>')


def arrow(kind, x1, y1, x2, y2):
    return (f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" '
            f'class="{kind}" marker-end="url(#m-{kind})"/>')


def lines_at(x, top, lines, anchor="middle", cls=""):
    """Draws `lines` with the first baseline one line below `top`."""
    return [text(x, top + LINE * (i + 1) - 5, line, anchor, cls) for i, line in enumerate(lines)]


def legend(kinds, y):
    """One sample of each arrow kind used, centred on a row; returns the elements and height."""
    items = [(k, label) for k, label in LEGEND if k in kinds]
    widths = [40 + width_of(label, SMALL) for _, label in items]
    x = (WIDTH - sum(widths) - 24 * (len(items) - 1)) / 2
    out = []
    for (kind, label), w in zip(items, widths):
        out.append(arrow(kind, x, y + 9, x + 32, y + 9))
        out.append(text(x + 40, y + 13, label, "start", "small"))
        x += w + 24
    return out, (LINE + 4 if items else 0)


def document(name, title, desc, height, body):
    height = round(height)
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{name}-title {name}-desc">',
        f'<title id="{name}-title">{esc(title.replace("`", ""))}</title>',
        f'<desc id="{name}-desc">{esc(desc.replace("`", ""))}</desc>',
        f"<defs>\n<style>{STYLE}</style>\n{MARKERS}\n</defs>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        *body, "</svg>", ""])


def statements(src, meta):
    """(line number, first word, the rest, the line) for each statement; takes `title` and
    `desc` into `meta` and skips comments and blank lines."""
    for number, line in enumerate(src.splitlines(), 1):
        line = line.strip()
        word, _, rest = line.partition(" ")
        if word == "title":
            meta["title"] = rest
        elif word == "desc":
            meta["desc"].append(rest)
        elif line and not line.startswith("#"):
            yield number, word, rest, line


def heading(meta, y, body):
    """Draws the title, if any; returns the y below it."""
    if meta.get("title"):
        body.append(text(WIDTH / 2, y + 15, meta["title"], cls="title"))
        return y + 30
    return y


# Sequence diagrams.

def render_seq(name, src):
    meta, order, labels, steps = {"desc": []}, [], {}, []
    for number, word, rest, line in statements(src, meta):
        try:
            if word == "participant":
                pid, *names = shlex.split(rest)
                order.append(pid)
                labels[pid] = names or [pid]
            elif word == "note":
                span, _, note = rest.partition(":")
                ends = span.strip().split("..")
                steps.append((number, "note", ends[0], ends[-1], note.strip()))
            elif word == "divider":
                steps.append((number, "divider", None, None, rest))
            elif m := ARROW.match(line):
                steps.append((number, KINDS[m[2]], m[1], m[3], m[4]))
            else:
                raise SourceError(f"cannot read {line!r}")
            if word != "participant" and steps and steps[-1][2] is not None \
                    and not {steps[-1][2], steps[-1][3]} <= set(order):
                raise SourceError(f"unknown participant in {line!r}")
        except (SourceError, ValueError) as err:
            raise SourceError(f"{name}.seq:{number}: {err}") from None
    # Lifelines: far enough apart for their heads and for the longest word of each label between
    # neighbours; the rest of the width goes where labels would otherwise wrap most. A label
    # that spans several gaps asks each for an equal share.
    head_w = [max([110, width_of(labels[p][0], bold=True) + 4 * PAD]
                  + [width_of(n, SMALL) + 4 * PAD for n in labels[p][1:]]) for p in order]
    least = [(a + b) / 2 + PAD for a, b in zip(head_w, head_w[1:])]
    most = list(least)
    for _, kind, a, b, label in steps:
        i, j = sorted((order.index(a), order.index(b))) if a else (0, 0)
        if kind in KINDS.values():
            word, whole = word_room(label)
            if j == i + 1:
                least[i] = max(least[i], word)
            for g in range(i, j):
                most[g] = max(most[g], whole / (j - i))
    gaps = share(least, most, WIDTH - 2 * MARGIN - (head_w[0] + head_w[-1]) / 2,
                 f"{name}.seq: the participants")
    x = {p: MARGIN + head_w[0] / 2 + sum(gaps[:i]) for i, p in enumerate(order)}
    col = sum(gaps) / len(gaps)
    body = []
    y = heading(meta, MARGIN, body)
    head_h = max(len(names) for names in labels.values()) * LINE + 2 * PAD
    for pid, w in zip(order, head_w):
        bold, sub = labels[pid][:1], labels[pid][1:]
        body.append(rect(x[pid] - w / 2, y, w, head_h, "actor"))
        body += lines_at(x[pid], y + PAD, bold, cls="bold")
        body += lines_at(x[pid], y + PAD + LINE * len(bold), sub, cls="small")
    y += head_h
    top, lifelines, used = y, len(body), set()
    y += 12
    for number, kind, a, b, label in steps:
        try:
            if kind == "note":
                xa, xb = sorted((x[a], x[b]))
                if a == b:
                    lines = wrap(label, NOTE_MAX - 2 * PAD)
                    w = max(width_of(l) for l in lines) + 2 * PAD
                    left = min(max(xa - w / 2, MARGIN), WIDTH - MARGIN - w)
                else:
                    left = max(xa - 0.4 * col, MARGIN)
                    w = min(xb + 0.4 * col, WIDTH - MARGIN) - left
                    lines = wrap(label, w - 2 * PAD)
                h = LINE * len(lines) + PAD
                body.append(rect(left, y, w, h, "note", rx=2))
                body += lines_at(left + PAD, y + PAD / 2, lines, "start")
                y += h + 10
            elif kind == "divider":
                [line] = wrap(label, WIDTH - 6 * MARGIN, bold=True)
                w = width_of(line, bold=True) + 3 * PAD
                body.append(f'<line x1="{MARGIN}" y1="{num(y + 13)}" x2="{WIDTH - MARGIN}" '
                            f'y2="{num(y + 13)}" class="rule"/>')
                body.append(rect((WIDTH - w) / 2, y + 2, w, LINE + 4, "phase", rx=11))
                body.append(text(WIDTH / 2, y + 18, line, cls="bold"))
                y += LINE + 18
            else:
                if a == b:
                    raise SourceError("a message needs two different participants")
                used.add(kind)
                x1, x2 = x[a], x[b]
                lines = wrap(label, abs(x2 - x1) - 2 * PAD)
                body += lines_at((x1 + x2) / 2, y, lines, cls="halo")
                y += LINE * len(lines) + 3
                body.append(arrow(kind, x1, y, x2, y))
                y += 12
        except ValueError:
            raise SourceError(f"{name}.seq:{number}: a divider must fit on one line") from None
        except SourceError as err:
            raise SourceError(f"{name}.seq:{number}: {err}") from None
    y += 4
    body[lifelines:lifelines] = [
        f'<line x1="{num(x[p])}" y1="{top}" x2="{num(x[p])}" y2="{num(y)}" class="life"/>'
        for p in order]
    marks, h = legend(used, y + 8)
    return document(name, meta.get("title", name), " ".join(meta["desc"]),
                    y + 8 + h + MARGIN, body + marks)


# Block diagrams.

def cell_height(cell, w):
    """The height a cell's contents need at width `w`, and its ticks as (x, row, left, label):
    a tick's label sits under the bar, on the first row where it overlaps no other label."""
    if cell["kind"] == "box":
        return LINE * len(cell["lines"]) + 2 * PAD, []
    ticks = []
    for at, label in sorted(cell["marks"]):
        tx = PAD + (w - 2 * PAD) * at / cell["max"]
        lw = width_of(label, SMALL)
        left = min(max(tx - lw / 2, 2), w - 2 - lw)
        row = 0
        while any(r == row and left < l + width_of(lab, SMALL) + 8 and l < left + lw + 8
                  for _, r, l, lab in ticks):
            row += 1
        ticks.append((tx, row, left, label))
    rows = 1 + max((t[1] for t in ticks), default=-1)
    return LINE * (len(cell["lines"]) + rows) + 28 + 2 * PAD, ticks


def draw_cell(cell, left, top, w, h, body):
    need, ticks = cell_height(cell, w)
    body.append(rect(left, top, w, h, "cell"))
    y, first, rest = top + (h - need) / 2 + PAD, cell["lines"][:1], cell["lines"][1:]
    body += lines_at(left + w / 2, y, first, cls="bold")
    y += LINE
    if cell["kind"] == "gauge":
        bar_w, bar_y = w - 2 * PAD, y + 6
        body.append(rect(left + PAD, bar_y, bar_w, 16, "bar", rx=2))
        body.append(rect(left + PAD + 1, bar_y + 1, (bar_w - 2) * cell["fill"] / cell["max"], 14,
                         "level", rx=1))
        for tx, row, tleft, label in ticks:
            body.append(f'<line x1="{num(left + tx)}" y1="{num(bar_y - 4)}" '
                        f'x2="{num(left + tx)}" y2="{num(bar_y + 20)}" class="tick"/>')
            body.append(text(left + tleft, bar_y + 34 + LINE * row, label, "start", "small"))
        y += 28 + LINE * (1 + max((t[1] for t in ticks), default=-1))
    body += lines_at(left + w / 2, y, rest)


def render_blocks(name, src):
    meta, columns, rows = {"desc": []}, [], []
    for number, word, rest, line in statements(src, meta):
        head, _, tail = rest.partition(":")
        try:
            if word == "columns":
                columns = rest.split()
            elif word == "row":
                rows.append({"caption": rest, "cells": {}, "links": [], "texts": []})
            elif word in ("box", "gauge"):
                col, *opts = head.split()
                cell = {"kind": word, "marks": [], "lines": [l.strip() for l in tail.split("|")]}
                cell.update((k, float(v)) for k, v in (o.split("=") for o in opts))
                rows[-1]["cells"][columns.index(col)] = cell
            elif word == "mark":
                col, at = head.split()
                rows[-1]["cells"][columns.index(col)]["marks"].append((float(at), tail.strip()))
            elif word == "link":
                m = ARROW.match(rest)
                a, b = columns.index(m[1]), columns.index(m[3])
                if abs(a - b) != 1:
                    raise SourceError("a link joins adjacent columns")
                rows[-1]["links"].append((min(a, b), KINDS[m[2]], a, b, m[4]))
            elif word == "text:":
                rows[-1]["texts"].append(rest)
            else:
                raise SourceError(f"cannot read {line!r}")
        except (ValueError, IndexError, KeyError, TypeError) as err:
            raise SourceError(f"{name}.blocks:{number}: cannot read {line!r} ({err})") from None
        except SourceError as err:
            raise SourceError(f"{name}.blocks:{number}: {err}") from None
    inner = WIDTH - 2 * MARGIN - 2 * PAD
    widths = [max([0] + [max(width_of(c["lines"][0], bold=True),
                             *(width_of(l) for l in c["lines"][1:]),
                             150 if c["kind"] == "gauge" else 0) + 2 * PAD
                         for r in rows for i, c in r["cells"].items() if i == col])
              for col in range(len(columns))]
    # Each gap between columns gets the room its longest word needs, then a share of the rest
    # in proportion to what its labels would need unwrapped.
    least, most = [24.0] * (len(columns) - 1), [24.0] * (len(columns) - 1)
    for r in rows:
        for gap, _, _, _, label in r["links"]:
            need = word_room(label)
            least[gap], most[gap] = max(least[gap], need[0]), max(most[gap], need[1])
    gaps = share(least, most, inner - sum(widths), f"{name}.blocks: the columns")
    lefts = [MARGIN + PAD + sum(widths[:i]) + sum(gaps[:i]) for i in range(len(columns))]
    body, kinds = [], set()
    y = heading(meta, MARGIN, body)
    for r in rows:
        top, band = y, len(body)
        body.append(text(MARGIN + PAD, y + 19, r["caption"], "start", "bold"))
        y += 28
        stacks = {}
        for gap, kind, a, b, label in r["links"]:
            stacks.setdefault(gap, []).append((kind, a, b, wrap(label, gaps[gap] - 2 * PAD)))
        stack_h = {g: sum(LINE * len(l[3]) + 14 for l in s) for g, s in stacks.items()}
        h = max([cell_height(c, widths[i])[0] for i, c in r["cells"].items()]
                + [v + 2 * PAD for v in stack_h.values()])
        for i, cell in sorted(r["cells"].items()):
            draw_cell(cell, lefts[i], y, widths[i], h, body)
        for gap, stack in sorted(stacks.items()):
            x1, x2 = lefts[gap] + widths[gap], lefts[gap + 1]
            ly = y + (h - stack_h[gap]) / 2
            for kind, a, b, lines in stack:
                kinds.add(kind)
                body += lines_at((x1 + x2) / 2, ly, lines)
                ly += LINE * len(lines) + 4
                start, end = (x1, x2) if a < b else (x2, x1)
                body.append(arrow(kind, start + (2 if a < b else -2), ly, end, ly))
                ly += 10
        y += h + 8
        for paragraph in r["texts"]:
            lines = wrap(paragraph, inner)
            body += lines_at(MARGIN + PAD, y, lines, "start")
            y += LINE * len(lines)
        y += PAD
        body.insert(band, rect(MARGIN, top, WIDTH - 2 * MARGIN, y - top, "band", rx=6))
        y += 10
    marks, h = legend(kinds, y)
    return document(name, meta.get("title", name), " ".join(meta["desc"]),
                    y + h + MARGIN, body + marks)


RENDERERS = {".seq": render_seq, ".blocks": render_blocks}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a committed SVG is stale or missing")
    args = parser.parse_args()
    stale = []
    for source in sorted(p for p in HERE.iterdir() if p.suffix in RENDERERS):
        try:
            svg = RENDERERS[source.suffix](source.stem, source.read_text(encoding="utf-8"))
        except SourceError as err:
            sys.exit(f"render.py: {err}")
        target = OUT / f"{source.stem}.svg"
        shown = target.relative_to(HERE.parent.parent)
        if not target.exists():
            stale.append(f"{shown} is missing")
        elif target.read_text(encoding="utf-8") != svg:
            stale.append(f"{shown} differs from {source.name}")
        else:
            continue
        if not args.check:
            OUT.mkdir(parents=True, exist_ok=True)
            target.write_text(svg, encoding="utf-8")
            print(f"wrote {shown}")
    if args.check and stale:
        for problem in stale:
            print(f"render.py: {problem}", file=sys.stderr)
        sys.exit("render.py: run python3 book/diagrams/render.py and commit the SVGs")


if __name__ == "__main__":
    main()

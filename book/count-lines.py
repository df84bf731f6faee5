#!/usr/bin/env python3
"""Counts the code lines of the programs the book compares, and writes the table it shows.

A code line is a line that is not blank and not only a comment: `//`, `///` and `//!` lines in
Rust; `#` lines and docstrings in Python. A region is a whole file, or the lines between
`ANCHOR: name` and `ANCHOR_END: name` markers (the regions the book includes).

    python3 book/count-lines.py            # prints the table
    python3 book/count-lines.py --write    # writes book/src/line-counts.md
    python3 book/count-lines.py --check    # fails if book/src/line-counts.md is stale
    python3 book/count-lines.py --at REV   # the same counts at a git revision (to compare)
"""

import argparse
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "book/src/line-counts.md"

# (what, [(column, path, anchor or None)]); the columns are the same for every row.
COLUMNS = ["switchboard", "tokio", "asyncio"]
ROWS = [
    (
        "The echo protocol (chapter 1)",
        [
            ("switchboard", "examples/echo_server.rs", "protocol"),
            ("tokio", "examples/tokio_echo.rs", "echo"),
            ("asyncio", "examples/asyncio/echo_server.py", "protocol"),
        ],
    ),
    (
        "Lines, then length-prefixed frames after `UPGRADE` (whole program)",
        [
            ("switchboard", "examples/switching/switchboard.rs", None),
            ("tokio", "examples/switching/tokio.rs", None),
            ("asyncio", "examples/switching/asyncio.py", None),
        ],
    ),
]


def source(path, rev):
    if rev is None:
        return (ROOT / path).read_text()
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True
    )
    return shown.stdout if shown.returncode == 0 else None


def region(text, anchor):
    if anchor is None:
        return text.splitlines()
    lines, inside, found = [], False, False
    for line in text.splitlines():
        if line.strip().endswith(f"ANCHOR_END: {anchor}"):
            inside = False
        elif line.strip().endswith(f"ANCHOR: {anchor}"):
            inside = found = True
        elif inside:
            lines.append(line)
    if not found:
        raise SystemExit(f"no anchor {anchor!r}")
    return lines


def code_lines(lines, python):
    count, docstring = 0, False
    for line in lines:
        stripped = line.strip()
        if python and docstring:
            docstring = not stripped.endswith('"""')
            continue
        if not stripped or stripped.startswith("#" if python else "//"):
            continue
        if python and stripped.startswith('"""'):
            docstring = not (len(stripped) >= 6 and stripped.endswith('"""'))
            continue
        count += 1
    return count


def counts(rev=None):
    table = []
    for what, programs in ROWS:
        row = {}
        for column, path, anchor in programs:
            text = source(path, rev)
            row[column] = (
                None if text is None else code_lines(region(text, anchor), path.endswith(".py"))
            )
        table.append((what, programs, row))
    return table


def markdown(table):
    out = [
        "<!-- Written by book/count-lines.py --write; .ci/book-check.py checks it. -->",
        "",
        "| code lines | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for what, programs, row in table:
        cells = []
        for column, path, anchor in programs:
            where = f"`{path}`" + (f" ({anchor})" if anchor else "")
            cells.append(f"{row[column]} <br><small>{where}</small>")
        out.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--at", metavar="REV")
    args = parser.parse_args()
    table = counts(args.at)
    text = markdown(table)
    if args.write:
        TABLE.write_text(text)
    elif args.check:
        if not TABLE.exists() or TABLE.read_text() != text:
            sys.exit(f"{TABLE.relative_to(ROOT)} is stale: run python3 book/count-lines.py --write")
    else:
        sys.stdout.write(text)
    # The targets of the book's claims: chapter 1's echo in 12 lines or fewer, and the
    # switching server no longer than the tokio one.
    echo, switching = (row for _, _, row in table)
    if args.at is None and (echo["switchboard"] > 12 or switching["switchboard"] > switching["tokio"]):
        sys.exit(f"over the targets: echo {echo['switchboard']} > 12 lines, or switching "
                 f"{switching['switchboard']} > tokio's {switching['tokio']}")


if __name__ == "__main__":
    main()

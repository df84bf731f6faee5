#!/usr/bin/env python3
"""Builds the book and checks what its readers depend on; `python3 .ci/book-check.py`.

1. `mdbook build book` prints no warning and no error.
2. The diagrams (book/src/diagrams/*.svg) are what their text sources generate.
3. No Rust is typed inline: every `rust` fence in book/src holds only `{{#include}}` lines.
4. Every include names an anchor (never a line range) that exists in the included file, and
   every example the book includes has a test that runs it (a test file names it).
5. No broken internal link in the rendered book: every relative `href` and `src` points to a
   file of the output, and every `#fragment` to an element with that id.

Hand-written (standard library only) rather than mdbook-linkcheck: that crate does not read
mdbook 0.5's render context, its maintained fork (mdbook-linkcheck2) checks neither fragments
nor included anchors and would add a TLS/HTTP stack build to CI for web checks we do not run,
and checks 3 and 4 are this project's rules, which no tool knows.
"""

import html.parser
import pathlib
import re
import subprocess
import sys
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SRC = BOOK / "src"
OUT = BOOK / "book"

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
INCLUDE = re.compile(r"\{\{#(include|rustdoc_include)\s+([^}\s]+)\s*\}\}")

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)
    print(f"  {message}")


def build() -> None:
    print("mdbook build book")
    run = subprocess.run(
        ["mdbook", "build", str(BOOK)], capture_output=True, text=True, check=False
    )
    output = run.stdout + run.stderr
    print(output, end="")
    if run.returncode != 0:
        problem(f"mdbook build exited with status {run.returncode}")
    for line in output.splitlines():
        if re.search(r"\b(WARN|WARNING|ERROR)\b", line):
            problem(f"mdbook: {line.strip()}")


def diagrams() -> None:
    print("diagrams: regenerated from their sources, compared with the committed SVGs")
    render = BOOK / "diagrams" / "render.py"
    if not render.exists():
        problem(f"{render.relative_to(ROOT)} is missing")
        return
    run = subprocess.run([sys.executable, str(render), "--check"], check=False)
    if run.returncode != 0:
        problem("diagrams out of date: run `python3 book/diagrams/render.py` and commit")


def line_counts() -> None:
    print("line counts: the table of the book is what book/count-lines.py counts now, on target")
    run = subprocess.run([sys.executable, str(BOOK / "count-lines.py"), "--check"], check=False)
    if run.returncode != 0:
        problem("line counts: stale table or a target missed (book/count-lines.py)")


def fences(path: pathlib.Path, lines: list[str]) -> None:
    """Checks that every `rust` fence of one chapter holds include directives only."""
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        marker, lang = opening.group(2), opening.group(3)
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(marker):
            body.append(lines[i])
            i += 1
        i += 1
        if not lang.split(",")[0] == "rust":
            continue
        where = f"{path.relative_to(ROOT)}:{start + 1}"
        code = [line for line in body if line.strip()]
        if not code:
            problem(f"{where}: an empty rust fence")
        for line in code:
            if not INCLUDE.fullmatch(line.strip()):
                problem(f"{where}: Rust typed inline (include it from examples/): {line.strip()}")


def includes(path: pathlib.Path, text: str, examples: set[str]) -> None:
    """Checks every include of one chapter: an anchor, which exists in the included file."""
    for number, line in enumerate(text.splitlines(), 1):
        for directive in INCLUDE.finditer(line):
            where = f"{path.relative_to(ROOT)}:{number}"
            target, _, anchor = directive.group(2).partition(":")
            file = (path.parent / target).resolve()
            if not file.is_file():
                problem(f"{where}: includes {target}, which does not exist")
                continue
            if anchor == "" and file.suffix != ".md":
                problem(f"{where}: includes all of {target}: name an anchor")
                continue
            if anchor and re.fullmatch(r"[\d:]+", anchor):
                problem(f"{where}: a line range ({anchor}) drifts: use an ANCHOR marker")
                continue
            if anchor:
                source = file.read_text(encoding="utf-8")
                for marker in (f"ANCHOR: {anchor}", f"ANCHOR_END: {anchor}"):
                    if not re.search(rf"\b{re.escape(marker)}\b", source):
                        problem(f"{where}: {target} has no `{marker}`")
            try:
                relative = file.relative_to(ROOT / "examples")
            except ValueError:
                continue
            examples.add(str(relative))


def examples_tested(included: set[str]) -> None:
    """Every example the book shows is run by a test, which names it."""
    print("examples the book includes, and the tests that run them")
    tests = {p: p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.rs")}
    for example in sorted(included):
        parts = pathlib.PurePath(example).parts
        if parts[0].endswith(".rs"):
            name = parts[0][: -len(".rs")]  # examples/x.rs
        elif len(parts) > 1 and parts[-1].endswith(".rs"):
            name = parts[0]  # examples/x/main.rs and its modules
        else:
            name = example  # another language's listing: named by its path
        needle = f'"{name}"' if "/" not in name else name
        runners = sorted(p.name for p, text in tests.items() if needle in text)
        if runners:
            print(f"  examples/{example}: {', '.join(runners)}")
        else:
            problem(f"examples/{example} is in the book, but no test under tests/ names {needle}")


class Page(html.parser.HTMLParser):
    """The ids an HTML page defines and the links it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            if name in ("href", "src"):
                self.links.append(value)


def links() -> None:
    print("links in the rendered book")
    pages: dict[pathlib.Path, Page] = {}
    for file in sorted(OUT.rglob("*.html")):
        page = Page()
        page.feed(file.read_text(encoding="utf-8"))
        pages[file] = page
    if not pages:
        problem(f"no HTML under {OUT.relative_to(ROOT)}")
    checked = 0
    # print.html repeats every chapter with its links rewritten; 404.html is served from any
    # depth with a site-absolute base: the chapters themselves are what is checked.
    for file, page in pages.items():
        if file.name in ("print.html", "404.html"):
            continue
        for link in page.links:
            parsed = urllib.parse.urlsplit(link)
            if parsed.scheme or link.startswith("//"):
                continue  # a web link: not checked (CI stays offline)
            checked += 1
            where = f"{file.relative_to(OUT)}: {link}"
            target = file if not parsed.path else (file.parent / urllib.parse.unquote(parsed.path))
            target = target.resolve()
            if not target.is_relative_to(OUT.resolve()):
                problem(f"{where} leaves the book (link to GitHub or include the code)")
                continue
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problem(f"{where}: no such file in the rendered book")
                continue
            fragment = urllib.parse.unquote(parsed.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if fragment not in ids:
                    problem(f"{where}: no element with id `{fragment}` in {target.name}")
    print(f"  {checked} internal links and resources checked in {len(pages)} pages")


def main() -> int:
    build()
    diagrams()
    line_counts()
    print("code blocks: every rust fence includes compiled code, by anchor")
    included: set[str] = set()
    for path in sorted(SRC.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        fences(path, text.splitlines())
        includes(path, text, included)
    examples_tested(included)
    links()
    if problems:
        print(f"book check: {len(problems)} problem(s)")
        return 1
    print("book check: no problem")
    return 0


if __name__ == "__main__":
    sys.exit(main())

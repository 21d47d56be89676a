#!/usr/bin/env python3
"""Import cycles between the source files of each crate (issue #19), for `make cycles`.

cargo-modules (`cargo modules dependencies --acyclic`) is the tool for this, but its
newest release needs a newer rustc than this project's, and it compiles rust-analyzer
(about 15 minutes on two cores), too slow for CI. This reads the `crate::`, `super::`
and `self::` paths of every file (in `use` lines and inline), maps each to the file
that defines the module it names, and prints every cycle of files that use each
other. A parent using a module it declares (`mod x;` then `x::f()`) is ownership, not
an edge: only a child using its parent, and modules using siblings or cousins, count.
It is a text scan, not a compiler: a path inside a string or comment is skipped only
when the line is a `//` comment. Exit 1 when a cycle exists, or when the self-test
(a made-up crate with one cycle) does not find exactly that one.
"""

import re
import sys
from pathlib import Path

CRATES = {"src": "src/lib.rs", "store/src": "store/src/lib.rs", "cli/src": "cli/src/main.rs"}
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)::([^;]*);", re.S)


def module_of(root: Path, file: Path) -> tuple:
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def expand_group(body: str) -> list:
    """`a::{b, c::d}` -> ["a::b", "a::c::d"] (nested groups flattened one level at a time)."""
    body = re.sub(r"\s+", "", body)
    match = re.match(r"^([^{]*)\{(.*)\}$", body)
    if not match:
        return [body]
    prefix, inner = match.groups()
    items, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current += ch
    if current:
        items.append(current)
    out = []
    for item in items:
        out.extend(expand_group(prefix + item))
    return out


def targets(text: str, here: tuple) -> list:
    """Module paths (tuples from the crate root) this file's text refers to."""
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
    found = []

    def absolute(kind, rest):
        segs = [s for s in rest.split("::") if s]
        if kind == "crate":
            return tuple(segs)
        base = list(here)
        if kind == "super":
            base = base[:-1]
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
        return tuple(base + segs)

    for kind, body in USE_GROUP_RE.findall(code):
        for path in expand_group(body):
            found.append(absolute(kind, path.split(" as ")[0]))
    for kind, rest in PATH_RE.findall(code):
        if rest != "::{":
            found.append(absolute(kind, rest))
    return found


def self_test() -> int:
    """The check must fail on a cycle: a crate whose `a` and `b` use each other."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "lib.rs").write_text("mod a;\nmod b;\nmod c;\n")
        (root / "a.rs").write_text("use crate::b::B;\npub struct A;\n")
        (root / "b.rs").write_text("pub struct B;\nfn f() { let _ = super::a::A; }\n")
        (root / "c.rs").write_text("// use crate::a::A; a comment is no edge\nuse crate::a::A;\n")
        found = check({tmp: str(root / "lib.rs")}, quiet=True)
    if found != 1:
        print(f"self-test: expected to find 1 cycle (a <-> b), found {found}")
        return 1
    return 0


def main() -> int:
    if self_test():
        return 1
    return 1 if check(CRATES) else 0


def check(crates: dict, quiet: bool = False) -> int:
    cycles = 0
    for root_dir, root_file in crates.items():
        root = Path(root_dir)
        files = {module_of(root, f): f for f in root.rglob("*.rs")}
        graph = {m: set() for m in files}
        for module, file in files.items():
            for path in targets(file.read_text(), module):
                # The longest prefix naming a file is the module used.
                for n in range(len(path), -1, -1):
                    target = path[:n]
                    if target in files:
                        break
                if target == module or target[: len(module)] == module:
                    continue  # itself, or a module it owns
                graph[module].add(target)
        cycles += report_cycles(root_dir, graph, quiet)
    return cycles


def report_cycles(crate: str, graph: dict, quiet: bool) -> int:
    """Tarjan's strongly connected components; each with more than one file is a cycle."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for component in [] if quiet else out:
        names = sorted("::".join(m) or "(root)" for m in component)
        edges = sorted(
            f"{'::'.join(a) or '(root)'} -> {'::'.join(b) or '(root)'}"
            for a in component
            for b in graph[a]
            if b in component
        )
        print(f"{crate}: cycle between {', '.join(names)}")
        for edge in edges:
            print(f"    {edge}")
    return len(out)


if __name__ == "__main__":
    sys.exit(main())

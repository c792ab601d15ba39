#!/usr/bin/env python3
"""Finds modules of the crate that import each other, directly or round a loop.

Each file under src/ is a module. A module refers to another through a
`crate::` or `super::` path (in a `use`, or written inline). A module and its
own descendants may refer to each other freely: they are one unit. Loops are
looked for twice: between files, and between the crate's top-level modules
(each with everything under it). Any loop is printed, and the exit status
is 1.

    python3 scripts/module_cycles.py [src]
"""

import re
import sys
from pathlib import Path

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def module_of(path: Path, root: Path) -> tuple:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def paths_after(text: str, start: int) -> list:
    """The paths written at `start`: `a::b::c`, or a brace group `{a::b, c::{d, e}}`."""

    def parse(i):
        # Returns (paths, next index) for the path tree starting at i.
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            i += 1
            found = []
            while i < len(text) and text[i] != "}":
                inner, i = parse(i)
                found.extend(inner)
                while i < len(text) and (text[i].isspace() or text[i] == ","):
                    i += 1
            return found, i + 1
        match = IDENT.match(text, i)
        if not match:
            return [()], i
        name = match.group(0)
        i = match.end()
        if text.startswith("::", i):
            rest, i = parse(i + 2)
            return [(name,) + tail for tail in rest], i
        # Skip `as alias`.
        alias = re.match(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*", text[i:])
        if alias:
            i += alias.end()
        return [(name,)], i

    return parse(start)[0]


def references(module: tuple, is_dir_module: bool, text: str) -> set:
    found = set()
    for match in re.finditer(r"\b(crate|super)((?:::super)*)::", text):
        if match.group(1) == "crate":
            base = ()
        else:
            # `super` of a file a/b.rs is `a`; of a/b/mod.rs (module a::b) also `a`.
            levels = 1 + match.group(2).count("super")
            base = module[: len(module) - levels] if len(module) >= levels else ()
        for path in paths_after(text, match.end()):
            found.add(base + tuple(part for part in path if part != "self"))
    return found


def owner(path: tuple, modules: set) -> tuple:
    """The deepest module that `path` names or lies inside."""
    for length in range(len(path), 0, -1):
        if path[:length] in modules:
            return path[:length]
    return ()


def related(a: tuple, b: tuple) -> bool:
    shorter, longer = sorted((a, b), key=len)
    return longer[: len(shorter)] == shorter


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = {module_of(path, root): path for path in root.rglob("*.rs")}
    files.pop((), None)
    modules = set(files)
    graph, top = {}, {}
    for module, path in files.items():
        text = strip_comments(path.read_text())
        for reference in references(module, path.name == "mod.rs", text):
            target = owner(reference, modules)
            if target and not related(module, target):
                graph.setdefault(module, set()).add(target)
                top.setdefault(module[:1], set()).add(target[:1])
    loops = cycles(graph) + [loop for loop in cycles(top) if loop not in cycles(graph)]
    for loop in loops:
        names = ["::".join(module) for module in loop]
        print("modules that import each other: " + ", ".join(names))
        edges = graph if all(module in graph or module in files for module in loop) and loop in cycles(graph) else top
        for module in loop:
            targets = sorted("::".join(t) for t in edges.get(module, ()) if t in loop)
            print(f"  {'::'.join(module)} -> {', '.join(targets)}")
    return 1 if loops else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Module-graph check for src/ (issue 11): no import cycles, and no front reaching a source.

The graph is read from `use crate::…` / `use super::…` / `use self::…` trees and from inline
`crate::…` / `super::…` paths, with comments, string literals and `#[cfg(test)]` items left
out. Nodes are files (`pacs/cache.rs`) and top-level modules (`pacs`; a front inside a
module, `dimse/scp`, counts as a module of its own: it is a layer above its parent). A module's own
submodules are its parts, so a parent naming its children (`mod x; pub use x::Y;`) is no
edge; `pub use` re-exports are followed to the file that defines the name.

Problems:
  cycle-module A -> B   an edge between top-level modules that lies on a cycle
  cycle-file A -> B     the same between files
  front-source A -> B   a front file (FRONTS) importing a source file (SOURCES)

It is a ratchet: the known list (.ci/module-graph-known.txt) holds today's problems. A
problem not on the list fails the check; so does a listed one that is gone (prune the list).
`--print` writes the current problems in the list's format (to prune after a fix; never to
wave a new cycle through).  Usage: module-graph.py [--src DIR] [--known FILE] [--print]
"""
import argparse, os, re, sys
from collections import defaultdict

FRONTS = ("admin", "dicomweb", "dimse::scp", "xds")  # translate requests; go through core only
SOURCES = ("pacs", "registry", "remote", "store")  # local PACS, XDS registry, remote gateways, cache index and blobs

LITERAL_OR_COMMENT = re.compile(r'//[^\n]*|/\*|b?r(#*)"|b?"|\'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\\'\n])\'')

def strip(code):
    """Blank out comments, string and char literals (newlines kept for line numbers)."""
    out, i, n = [], 0, len(code)
    blank = lambda s: re.sub(r"[^\n]", " ", s)
    while i < n:
        m = LITERAL_OR_COMMENT.search(code, i)
        if not m:
            out.append(code[i:]); break
        out.append(code[i:m.start()])
        tok, end = m.group(0), m.end()
        if tok.startswith("/*"):  # nested block comments
            depth = 1
            while depth and end < n:
                if code.startswith("/*", end): depth, end = depth + 1, end + 2
                elif code.startswith("*/", end): depth, end = depth - 1, end + 2
                else: end += 1
        elif m.group(1) is not None:  # raw string: up to '"' and as many '#'
            close = code.find('"' + m.group(1), end)
            end = n if close < 0 else close + 1 + len(m.group(1))
        elif tok.endswith('"'):
            while end < n and code[end] != '"': end += 2 if code[end] == "\\" else 1
            end += 1
        if m.start() > 0 and (code[m.start() - 1].isalnum() or code[m.start() - 1] == "_") and not tok.startswith("/"):
            out.append(tok); i = m.end(); continue  # an identifier ending in b/r, not a literal
        out.append(blank(code[m.start():end])); i = end
    return "".join(out)

def drop_test_items(code):
    """Blank out every item under #[cfg(test)] (test modules, test-only uses and helpers);
    also the names of test-only module files (`#[cfg(test)] mod tests;`)."""
    test_files = set()
    for m in reversed(list(re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", code))):
        i, depth = m.end(), 0
        while i < len(code):
            c = code[i]
            if c in "([": depth += 1
            elif c in ")]": depth -= 1
            elif c == ";" and depth == 0: break
            elif c == "{" and depth == 0:
                depth = 1
                while depth and i + 1 < len(code):
                    i += 1
                    depth += {"{": 1, "}": -1}.get(code[i], 0)
                break
            i += 1
        test_files.update(re.findall(r"\bmod\s+(\w+)\s*;", code[m.start():i + 1]))
        code = code[:m.start()] + re.sub(r"[^\n]", " ", code[m.start():i + 1]) + code[i + 1:]
    return code, test_files

def use_paths(tree, prefix=()):
    """Expand a use tree (`a::{b, c::{self, d as e}}`) into (path, alias) pairs."""
    tokens = re.findall(r"::|[{},*]|\w+", tree)
    def parse(pos, prefix):
        out, path, start = [], list(prefix), pos
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                while tokens[pos] != "}":
                    sub, pos = parse(pos, path)
                    out += sub
                    if tokens[pos] == ",": pos += 1
                return out, pos + 1
            if t in (",", "}"): break
            if t == "as": out.append((path, tokens[pos + 1])); return out, pos + 2
            if t != "::": path.append(t)
            pos += 1
        if path and pos > start:  # `a::{b, }` leaves an empty last item
            if path[-1] == "self": path = path[:-1]
            out.append((path, path[-1]))
        return out, pos
    return parse(0, list(prefix))[0]

def load(src):
    """Module path -> (file under src/, code without comments, literals and test items);
    test-only module files left out."""
    files, test_only = {}, set()
    for root, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs") or (root == src and name == "main.rs"): continue
            rel = os.path.relpath(os.path.join(root, name), src).replace(os.sep, "/")
            parts = rel[:-3].split("/")
            if parts[-1] in ("mod", "lib"): parts = parts[:-1]
            with open(os.path.join(root, name), encoding="utf-8") as f:
                code, tests = drop_test_items(strip(f.read()))
            files[tuple(parts)] = (rel, code)
            test_only.update(tuple(parts) + (t,) for t in tests)
    return {m: v for m, v in files.items() if not any(m[:len(t)] == t for t in test_only)}

def edges(files):
    """File-level edges {(from_rel, to_rel): (line, text)}."""
    reexports = defaultdict(dict)  # module -> {name: absolute path}
    found = defaultdict(list)  # module -> [(line, absolute path, text)]
    for mod, (rel, code) in files.items():
        inline = inline_modules(code)
        def absolute(path, at):
            here = list(mod) + [name for start, end, name in inline if start < at < end]
            if path[0] in ("crate", "$crate"): return list(path[1:])
            if path[0] == "self": return here + list(path[1:])
            if path[0] == "super":
                ups = len(path) - len(path_without_supers(path))
                return here[:len(here) - ups] + list(path[ups:]) if ups <= len(here) else None
            if tuple(mod) + (path[0],) in files: return list(mod) + list(path)  # a child module
            return None  # an external crate or a local name
        for m in re.finditer(r"\b(pub(\s*\([^)]*\))?\s+)?use\s+([^;]+);", code):
            line = code.count("\n", 0, m.start()) + 1
            for path, alias in use_paths(m.group(3)):
                a = absolute(path, m.start())
                if a is None: continue
                found[mod].append((line, a, "use " + "::".join(path)))
                if m.group(1) and alias != "*": reexports[mod][alias] = a
        for m in re.finditer(r"(?<![\w:])\$?(?:crate|self|super)(?:::\w+)+", code):
            a = absolute(m.group(0).split("::"), m.start())
            if a is not None:
                found[mod].append((code.count("\n", 0, m.start()) + 1, a, m.group(0)))
    def target(path):
        for _ in range(8):  # follow re-exports a few hops
            k = max(k for k in range(len(path) + 1) if tuple(path[:k]) in files)
            mod, rest = tuple(path[:k]), path[k:]
            if rest and rest[0] in reexports[mod]:
                path = reexports[mod][rest[0]] + rest[1:]
            else:
                return mod
        return mod
    out = {}
    for mod, uses in found.items():
        for line, path, text in uses:
            to = target(path)
            if to[:len(mod)] == mod: continue  # itself or one of its own parts
            out.setdefault((files[mod][0], files[to][0]), (line, text))
    return out

def inline_modules(code):
    """The (start, end, name) spans of inline `mod name { … }` blocks, for `super`/`self`."""
    spans = []
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code):
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        spans.append((m.start(), i, m.group(1)))
    return spans

def path_without_supers(path):
    i = 0
    while i < len(path) and path[i] == "super": i += 1
    return path[i:]

def cycle_edges(graph):
    """Edges inside a strongly connected component (each lies on some cycle), Tarjan."""
    index, low, stack, on, comp, counter = {}, {}, [], set(), {}, [0]
    nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            while True:
                w = stack.pop(); on.discard(w); comp[w] = v
                if w == v: break
    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index: visit(v)
    return {(a, b) for a, bs in graph.items() for b in bs if comp[a] == comp[b]}

def path_back(graph, start, goal):
    """A shortest path start -> … -> goal, to show the cycle an edge closes."""
    prev, todo = {start: None}, [start]
    for v in todo:
        if v == goal: break
        for w in sorted(graph.get(v, ())):
            if w not in prev: prev[w] = v; todo.append(w)
    path, v = [], goal
    while v is not None: path.append(v); v = prev.get(v)
    return list(reversed(path))

def problems(src):
    files_edges = edges(load(src))
    # A front inside a module (dimse::scp, the DIMSE front, over dimse, the protocol layer
    # its SCU side shares with the sources) is a layer of its own.
    def top(rel):
        for front in FRONTS:
            prefix = front.replace("::", "/")
            if "/" in prefix and (rel.startswith(prefix + "/") or rel == prefix + ".rs"):
                return prefix
        return rel.split("/")[0].removesuffix(".rs")
    module_of = lambda rel: "::".join(p for p in rel.removesuffix(".rs").split("/") if p != "mod")
    fgraph, mgraph, found = defaultdict(set), defaultdict(set), {}
    for (a, b) in files_edges:
        fgraph[a].add(b)
        if top(a) != top(b): mgraph[top(a)].add(top(b))
    for a, b in cycle_edges(mgraph):
        found[f"cycle-module {a} -> {b}"] = "cycle " + " -> ".join([a] + path_back(mgraph, b, a))
    for a, b in cycle_edges(fgraph):
        found[f"cycle-file {a} -> {b}"] = "cycle " + " -> ".join([a] + path_back(fgraph, b, a))
    is_in = lambda rel, roots: any(module_of(rel) == r or module_of(rel).startswith(r + "::") for r in roots)
    for (a, b), (line, text) in files_edges.items():
        if is_in(a, FRONTS) and is_in(b, SOURCES):
            found[f"front-source {a} -> {b}"] = f"{a}:{line}: {text}"
    return found

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="module-graph ratchet (see the file's docstring)")
    ap.add_argument("--src", default=os.path.join(here, "..", "src"))
    ap.add_argument("--known", default=os.path.join(here, "module-graph-known.txt"))
    ap.add_argument("--print", action="store_true", help="print the current problems and exit 0")
    args = ap.parse_args()
    found = problems(args.src)
    if args.print:
        print("\n".join(sorted(found))); return 0
    with open(args.known, encoding="utf-8") as f:
        known = {l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")}
    new, gone = sorted(set(found) - known), sorted(known - set(found))
    for p in new: print(f"module graph: NEW {p}\n    ({found[p]})")
    for p in gone: print(f"module graph: FIXED, remove from {os.path.basename(args.known)}: {p}")
    if new or gone:
        print(f"module graph: {len(new)} new problem(s), {len(gone)} stale line(s) in {args.known}")
        return 1
    print(f"module graph: ok ({len(known)} known problem(s) left, none new)")
    return 0

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The architecture as a check: crates by job with arrows that only point down, no module cycle
inside any crate, and no product function over 100 lines without a `// Long: <reason>.` line
above it. Run by scripts/test; exit 1 names the offending arrow, cycle or function.

Layers (a crate may depend only on crates in lower layers):
  0  https                          the one TLS configuration every HTTP client starts from
  1  kareo, dock, testkit, simkit    the API clients; test helpers; the simulators' skeleton
  2  kareo-sim, dock-sim, domain     simulators; the vocabulary (config, events, ports)
  3  sync, tasks, writeback          the jobs (never each other)
  4  aws, embedded                   the AWS adapters (edges); the product in one process
  5  functions/*, cli, tests, bench  binaries and end-to-end tests
"""
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"https": 0, "kareo": 1, "dock": 1, "testkit": 1, "simkit": 1, "kareo-sim": 2, "dock-sim": 2,
         "domain": 2, "sync": 3, "tasks": 3, "writeback": 3, "aws": 4, "embedded": 4}
# What each function binary's job needs, and nothing else.
FUNCTION_JOB = {"poll": "sync", "task": "tasks", "write": "writeback", "webhook": "writeback"}
JOBS = {"sync", "tasks", "writeback"}

problems = []


def deps(manifest):
    d = tomllib.loads(manifest.read_text())
    return {k: v for k, v in d.get("dependencies", {}).items()}


def workspace_crates():
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    return [ROOT / m for m in ws["members"]]


for path in workspace_crates():
    manifest = path / "Cargo.toml"
    name = tomllib.loads(manifest.read_text())["package"]["name"]
    mine = LAYER.get(name, 5)
    if path.parent.name == "shared" and path.name != name:
        problems.append(f"{path.relative_to(ROOT)}: folder name differs from package '{name}'")
    for dep in deps(manifest):
        if dep in LAYER and LAYER[dep] >= mine:
            problems.append(f"{name} depends on {dep}: arrows must point down (layer {mine} → {LAYER[dep]})")
    if path.parent.name == "functions":
        jobs = {d for d in deps(manifest) if d in JOBS}
        want = {FUNCTION_JOB[path.name]}
        if jobs != want:
            problems.append(f"functions/{path.name} depends on jobs {sorted(jobs)}, its job is {sorted(want)}")


def module_of(src, f):
    """The module path of a source file: `src/write/ops/mod.rs` → ("write", "ops")."""
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


CRATE_REF = re.compile(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)")
SUPER_REF = re.compile(r"\b((?:super::)+)([a-z_][a-z0-9_]*)")


def lift(a, b):
    """Both modules lifted to the children of their lowest common ancestor; None when one
    contains the other (a parent using its child, or a child its parent, is not a cycle)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n == len(a) or n == len(b):
        return None
    return a[: n + 1], b[: n + 1]


for path in workspace_crates():
    src = path / "src"
    if not src.is_dir():
        continue
    files = {module_of(src, f): f for f in sorted(src.rglob("*.rs"))}
    modules = set(files)
    graph = {}
    for m, f in files.items():
        text = f.read_text()
        # Unit tests may reach anywhere in their crate.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        targets = set()
        for line in text.splitlines():
            if line.lstrip().startswith("//"):
                continue
            for ref in CRATE_REF.findall(line):
                segs = tuple(ref.strip(":").split("::"))
                while segs and segs not in modules:
                    segs = segs[:-1]
                targets.add(segs)
            for sup, name in SUPER_REF.findall(line):
                up = sup.count("super::")
                # A file's own module is `m`; `super` is its parent.
                base = m[: len(m) - up] if up <= len(m) else ()
                targets.add(base + (name,) if base + (name,) in modules else base)
        for t in targets:
            pair = lift(m, t)
            if pair:
                graph.setdefault(pair[0], set()).add(pair[1])
                graph.setdefault(pair[1], set())
    # Cycles among siblings (depth-first search with colours).
    colour = {}
    stack = []

    def visit(n):
        colour[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if colour.get(t) == 1:
                cyc = stack[stack.index(t):] + [t]
                problems.append(
                    f"{path.relative_to(ROOT)}: module cycle {' → '.join('::'.join(c) for c in cyc)}"
                )
            elif t not in colour:
                visit(t)
        stack.pop()
        colour[n] = 2

    for n in sorted(graph):
        if n not in colour:
            visit(n)

# Long functions: split, or say why not. Test modules, test files and generated code are exempt.
FN = re.compile(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(const )?fn (\w+)")
for path in workspace_crates():
    src = path / "src"
    if not src.is_dir():
        continue
    for f in sorted(src.rglob("*.rs")):
        if "generated" in f.name or path.name == "bench":
            continue
        lines = f.read_text().split("\n")
        end = next((i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines))
        i = 0
        while i < end:
            m = FN.match(lines[i])
            if not m:
                i += 1
                continue
            indent = len(m.group(1))
            j = i + 1
            while j < end and not (
                lines[j].startswith(" " * indent + "}")
                and len(lines[j]) - len(lines[j].lstrip()) == indent
            ):
                # A declaration without a body (a trait's method) ends at its `;`.
                if (len(lines[j]) - len(lines[j].lstrip()) == indent
                        and lines[j].rstrip().endswith(";")
                        and "{" not in "".join(lines[i:j])):
                    break
                j += 1
            if j - i + 1 > 100:
                k = i - 1
                while k >= 0 and lines[k].strip().startswith("#["):
                    k -= 1
                if not lines[k].strip().startswith("// Long:"):
                    problems.append(
                        f"{f.relative_to(ROOT)}:{i + 1}: fn {m.group(6)} is {j - i + 1} lines: "
                        "split it, or say why above it (`// Long: <reason>.`)"
                    )
            i = j + 1

if problems:
    print("layer check failed:")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(f"layers: {len(workspace_crates())} crates, arrows point down, no module cycles, long functions explained")

#!/usr/bin/env python3
"""Keeps the shared build cache bounded: removes the artifacts of this workspace's own crates
(libraries, binaries, test executables) except the newest six builds of each (a library is
built for several feature sets and profiles), and the incremental-compilation state
(scripts/test builds with CARGO_INCREMENTAL=0). Dependencies are never touched, so an
incremental CI run stays incremental. Run by scripts/test before it builds.

    python3 tools/prune_cache.py "$CARGO_TARGET_DIR"
"""
import collections
import os
import re
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEEP = 6


def our_names():
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    names = set()
    for member in ws["members"]:
        d = ROOT / member
        pkg = tomllib.loads((d / "Cargo.toml").read_text())
        names.add(pkg["package"]["name"].replace("-", "_"))
        for b in pkg.get("bin", []):
            names.add(b["name"].replace("-", "_"))
        for sub in ("tests", "src/bin"):
            for f in (d / sub).glob("*.rs") if (d / sub).is_dir() else []:
                names.add(f.stem)
    names.add(Path(ROOT / "functions").name)
    for f in (ROOT / "functions").iterdir():
        names.add(f.name)
    return names


def main(target):
    debug = Path(target) / "debug"
    if not debug.is_dir():
        return
    shutil.rmtree(debug / "incremental", ignore_errors=True)
    deps = debug / "deps"
    names = our_names()
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in deps.iterdir() if deps.is_dir() else []:
        m = re.match(r"^(?:lib)?([a-z0-9_]+)-([0-9a-f]{16})(?:\..*)?$", f.name)
        if m and m.group(1) in names:
            groups[m.group(1)][m.group(2)].append(f)
    freed = 0
    for builds in groups.values():
        newest = sorted(builds.values(), key=lambda fs: max(x.stat().st_mtime for x in fs))
        for fs in newest[:-KEEP]:
            for x in fs:
                freed += x.stat().st_size
                x.unlink()
    print(f"build cache: {freed / 1e9:.1f} GB of old builds of this workspace's crates removed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target"))

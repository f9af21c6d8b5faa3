#!/usr/bin/env python3
"""Keeps ARCHITECTURE.md honest. Fails, naming each problem, when:

- a module under src/ (each .rs file; a mod.rs as its directory, `engine/index/`) is not named
  in the "Code map" section, by path relative to src/ (`engine/log.rs`, `engine/index/`,
  brace groups such as `bin/fsdiff/{ops,exec}.rs` allowed) or by module path (`engine::log`);
- the code map names a path under src/ that does not exist;
- a layer rule of the "Bird's-eye view" is broken in the code (comments aside): the engine or
  the object tier naming fuser, `crate::fs` or `crate::cli`; the object tier naming the engine;
  fuser named in src/fs outside the FUSE adapter; object_store or tokio outside object/s3.rs;
- an item of the "Invariants" section names a test (`fn`/`mod` in src/ or tests/) or a mutant
  (scripts/mutants.py) that does not exist, or a mutant whose own test is not among the tests
  the item names.

Usage: scripts/arch_map_check.py   (exit 0: consistent; 1: problems listed)
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from mutants import MUTANTS  # noqa: E402

# (what it is, files it applies to, files exempt, forbidden pattern in code)
LAYER_RULES = [
    ("the engine never names fuser, the filesystem or the command line",
     r"^engine/", None, r"\bfuser\b|\bcrate::(fs|cli)\b"),
    ("the object tier names no other part of the crate, nor fuser",
     r"^object/", None, r"\bfuser\b|\bcrate::(engine|fs|cli)\b"),
    ("only the FUSE adapter names fuser inside the filesystem",
     r"^fs/", r"^fs/fuse_adapter(\.rs|/)", r"\bfuser::|\buse fuser\b"),
    ("only object/s3.rs knows object_store and tokio",
     r"", r"^object/s3\.rs$", r"\b(object_store|tokio)::|\buse (object_store|tokio)\b"),
]


def section(text, heading_prefix):
    """The lines of the `## ` section whose heading starts with `heading_prefix`."""
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if l.startswith("## " + heading_prefix)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1:end]


def backticked(lines):
    return re.findall(r"`([^`\n]+)`", "\n".join(lines))


def expand_braces(token):
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    out = []
    for alt in m.group(1).split(","):
        out += expand_braces(token[:m.start()] + alt.strip() + token[m.end():])
    return out


def source_files():
    for dirpath, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                yield os.path.relpath(os.path.join(dirpath, n), SRC).replace(os.sep, "/")


def module_key(rel):
    """A module's name in the map: its file, or for a mod.rs its directory with a slash."""
    return rel[: -len("mod.rs")] if rel.endswith("/mod.rs") else rel


def check_code_map(text, problems):
    lines = section(text, "Code map")
    if lines is None:
        problems.append("ARCHITECTURE.md has no '## Code map' section")
        return 0
    modules = {module_key(r) for r in source_files()}
    named = set()
    for token in backticked(lines):
        if " " in token or "*" in token or "://" in token or token == "mod.rs":
            continue
        for t in expand_braces(token):
            if "::" in t:
                # A module path: counts if it names a module; anything else (a type, a
                # function) is not a claim about files.
                path = t.removeprefix("crate::").replace("::", "/")
                for cand in (path + ".rs", path + "/"):
                    if cand in modules:
                        named.add(cand)
                continue
            if "/" not in t and not t.endswith(".rs"):
                continue
            t = t.removeprefix("src/")
            if t.endswith("/mod.rs"):
                t = t[: -len("mod.rs")]
            full = os.path.join(SRC, t)
            if t.endswith("/") and os.path.isdir(full) or t.endswith(".rs") and os.path.isfile(full):
                named.add(t)
            elif os.path.isdir(full):
                named.add(t + "/")
            else:
                problems.append(f"the code map names src/{t}, which does not exist "
                                "(paths in the code map are relative to src/)")
    for m in sorted(modules - named):
        problems.append(f"module src/{m}{'mod.rs' if m.endswith('/') else ''} is not in the code "
                        f"map of ARCHITECTURE.md (name it as `{m}`)")
    return len(modules)


def code_lines(path):
    """The file's lines with comments blanked (so that line numbers stay right)."""
    out = []
    for line in open(path, encoding="utf-8"):
        out.append("" if line.lstrip().startswith("//") else line.split("//", 1)[0])
    return out


def check_layers(problems):
    for rel in sorted(source_files()):
        if rel.startswith("bin/"):
            continue  # separate binaries (test tools), outside the library's layers
        for what, applies, exempt, forbidden in LAYER_RULES:
            if not re.search(applies, rel) or exempt and re.search(exempt, rel):
                continue
            for n, line in enumerate(code_lines(os.path.join(SRC, rel)), 1):
                if re.search(forbidden, line):
                    problems.append(f"layer rule broken ({what}): src/{rel}:{n}: {line.strip()}")
                    break


def defined_names():
    """fn and mod names defined in src/ and tests/, with the files defining them."""
    names = {}
    for top in ("src", "tests"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
                for name in re.findall(r"\b(?:fn|mod)\s+([a-z_][a-z0-9_]*)",
                                       open(path, encoding="utf-8").read()):
                    names.setdefault(name, set()).add(rel)
    return names


def mutant_requirement(args):
    """(test filter or None, --test target or None) of a mutant's cargo arguments."""
    filters, target, skip = [], None, False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("--features", "--test", "--bin", "--example", "-p"):
            if a == "--test":
                target = args[i + 1]
            skip = True
        elif not a.startswith("-"):
            filters.append(a)
    return (filters[-1] if filters else None), target


def check_invariants(text, problems):
    lines = section(text, "Invariants")
    if lines is None:
        problems.append("ARCHITECTURE.md has no '## Invariants' section")
        return 0
    items, current = [], None
    for line in lines:
        m = re.match(r"^(\d+)\. ", line)
        if m:
            current = (m.group(1), [line])
            items.append(current)
        elif current and line.startswith(" "):
            current[1].append(line)
        else:
            current = None
    mutants = {m[0]: m[5] for m in MUTANTS}
    names = defined_names()
    for number, item in items:
        tokens = backticked(item)
        cited_mutants = [t for t in tokens if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", t)]
        cited_tests = [t for t in tokens
                       if re.fullmatch(r"[a-z_][a-z0-9_]*(::[a-z_][a-z0-9_]*)*", t)
                       and "_" in t.split("::")[-1]]
        cited_paths = [t for t in tokens if "/" in t and " " not in t]
        for t in cited_tests:
            last = t.split("::")[-1]
            if last not in names and not os.path.isfile(os.path.join(ROOT, "tests", last + ".rs")):
                problems.append(f"invariant {number} names test {t}, which is defined nowhere")
        for p in cited_paths:
            if not os.path.exists(os.path.join(ROOT, p)):
                problems.append(f"invariant {number} names {p}, which does not exist")
        for m in cited_mutants:
            if m not in mutants:
                problems.append(f"invariant {number} names mutant {m}, which scripts/mutants.py "
                                "does not have")
                continue
            # A mutant may name several test groups (each must fail): the invariant must name
            # the test of one of them.
            args = mutants[m]
            groups = args if args and isinstance(args[0], list) else [args]
            ok = False
            for group in groups:
                test_filter, target = mutant_requirement(group)
                if test_filter:
                    seg = test_filter.split("::")[-1]
                    ok = ok or any(seg in t.split("::")[-1] for t in cited_tests)
                else:
                    files = {f"tests/{target}.rs"}
                    ok = ok or (target in tokens or any(p in files for p in cited_paths)
                                or any(names.get(t.split("::")[-1], set()) & files
                                       for t in cited_tests))
            if not ok:
                problems.append(f"invariant {number} names mutant {m}, whose test "
                                f"({test_filter or '--test ' + str(target)}) is not among the "
                                "tests it names")
    return len(items)


def main():
    text = open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8").read()
    problems = []
    modules = check_code_map(text, problems)
    check_layers(problems)
    invariants = check_invariants(text, problems)
    if problems:
        print("ARCHITECTURE.md and the code disagree:")
        for p in problems:
            print("  " + p)
        sys.exit(1)
    print(f"arch map: {modules} modules in the code map, layer rules kept, "
          f"{invariants} invariants name existing tests and their mutants")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Architecture rules of the Shoal workspace, checked from the source tree.

    python3 scripts/arch-check.py [--max-file-lines 600] [--max-fn-lines 100]
                                  [--report] [--report-modules] [--root DIR]

Prints one line per rule ("ok", "FAIL" or "info"), the offenders indented under
it, then a one-line summary. Exit status: 0 when every rule holds, 1 when one
does not, 2 when the check itself could not run (no cargo, unreadable tree).
Python 3 standard library only; it reads files and runs `cargo metadata
--no-deps` and `cargo tree` (no build).

Rules
  crate cycles    The graph of workspace crates (normal and build dependencies
                  on other workspace members, from `cargo metadata`) has no
                  cycle. Cycles that need a dev-dependency edge are printed as
                  info: cargo allows them and they are not import cycles.
  module cycles   Inside each crate target (lib, bins) no two top-level modules
                  import each other, directly or through others. Module A uses
                  module B when non-test code of A names B by a `crate::`,
                  `$crate::`, `super::` or `self::` path (in `use` trees or in
                  code). Test code (`#[cfg(test)]` items and modules, files
                  only declared under `#[cfg(test)]`) and doc comments are not
                  read. A module naming its own ancestor or descendant is not
                  an edge (parent and child are one unit). Cycles between
                  deeper modules inside one top-level module are printed as
                  info. Names reached through a re-export (`pub use` in the
                  crate root) are attributed to the module that re-exports.
  protocol deps   `shoal-protocol`'s normal dependency tree (transitive,
                  `cargo tree -e normal`, host platform) has no runtime crate:
                  tokio, rdkafka, rdkafka-sys, axum, hyper, opentelemetry*,
                  tonic, tracing-opentelemetry, reqwest. Runs with --locked
                  (never rewrites Cargo.lock); a stale lock file fails the rule.
  file size       No non-test .rs file is longer than --max-file-lines. Lines
                  of `#[cfg(test)]` modules (from their first attribute to
                  their closing brace, and blank lines after a trailing one)
                  are not counted. Test-only files are exempt: files under a
                  tests/ or benches/ directory, files named tests.rs, files of
                  test and bench targets, and files only declared by
                  `#[cfg(test)] mod`.
  fn size         No function outside tests is longer than --max-fn-lines, from
                  the line of `fn` to the line of its closing brace. Functions
                  in `#[cfg(test)]` items and `#[test]`/`#[tokio::test]`
                  functions are exempt, as are test-only files.

--report prints the crate dependency graph (normal and build dependencies on
workspace crates), one line per crate, dependencies first, e.g.
    shoal-kafka -> shoal-config, shoal-protocol, shoal-telemetry
--report-modules also prints each crate target's top-level module graph.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, field

RUNTIME_CRATES = (
    "tokio",
    "rdkafka",
    "rdkafka-sys",
    "axum",
    "hyper",
    "opentelemetry*",
    "tonic",
    "tracing-opentelemetry",
    "reqwest",
)
PROTOCOL_CRATE = "shoal-protocol"
TEST_DIRS = {"tests", "benches"}


class CheckError(Exception):
    """The check could not run (as opposed to a rule being violated)."""


# ---------------------------------------------------------------------------
# Lexer: just enough Rust to skip comments, strings and chars reliably.


@dataclass(frozen=True)
class Tok:
    kind: str  # ident, punct, lit, lifetime
    text: str
    line: int


_IDENT = re.compile(r"[^\W\d]\w*")
_RAW_IDENT = re.compile(r"r#([^\W\d]\w*)")
_RAW_STR = re.compile(r'(?:b|c)?r(#*)"')
_NUMBER = re.compile(r"\d[\w]*(?:\.\d[\w]*)?(?:[eE][+-]?\d+)?")
_PUNCT2 = ("::", "->", "=>")
# Word-like tokens, tried in order (a raw identifier before the `r` it starts with): pattern, kind, group kept.
_WORDS = ((_RAW_IDENT, "ident", 1), (_IDENT, "ident", 0), (_NUMBER, "lit", 0))


def _word(src: str, i: int) -> tuple[str, str, int] | None:
    """The identifier or number at `i`, as (kind, text, end), or None."""
    for pattern, kind, group in _WORDS:
        m = pattern.match(src, i)
        if m:
            return kind, m.group(group), m.end()
    return None


def lex(src: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n, line = 0, len(src), 1
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            line += src.count("\n", i, j)
            i = j
            continue
        m = _RAW_STR.match(src, i)
        if m:
            close = '"' + m.group(1)
            j = src.find(close, m.end())
            j = n if j < 0 else j + len(close)
            toks.append(Tok("lit", src[i:j], line))
            line += src.count("\n", i, j)
            i = j
            continue
        if c == '"' or (c in "bc" and src.startswith('"', i + 1)):
            j = i + (1 if c == '"' else 2)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            toks.append(Tok("lit", src[i:j], line))
            line += src.count("\n", i, j)
            i = j
            continue
        if c == "'" or (c == "b" and src.startswith("'", i + 1)):
            q = i if c == "'" else i + 1
            if src.startswith("\\", q + 1):  # escaped char: '\n', '\'', '\u{7f}'
                j = q + 3
                while j < n and src[j] != "'":
                    j += 1
                toks.append(Tok("lit", src[i : j + 1], line))
                i = j + 1
                continue
            if q + 2 < n and src[q + 2] == "'" and src[q + 1] != "\n":  # 'x'
                toks.append(Tok("lit", src[i : q + 3], line))
                i = q + 3
                continue
            if c == "'":  # lifetime or label
                m = _IDENT.match(src, i + 1)
                j = m.end() if m else i + 1
                toks.append(Tok("lifetime", src[i:j], line))
                i = j
                continue
        word = _word(src, i)
        if word:
            kind, text, i = word
            toks.append(Tok(kind, text, line))
            continue
        two = src[i : i + 2]
        if two in _PUNCT2:
            toks.append(Tok("punct", two, line))
            i += 2
            continue
        toks.append(Tok("punct", c, line))
        i += 1
    return toks


# ---------------------------------------------------------------------------
# Structural scan of one file.


@dataclass
class FnInfo:
    name: str
    start: int
    end: int
    test: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass
class ModDecl:
    name: str
    inline_prefix: tuple[str, ...]  # inline modules of this file around the decl
    test: bool
    path_attr: str | None
    line: int


@dataclass
class Ref:
    module: tuple[str, ...]  # module (full path from the crate root) making the reference
    segments: tuple[str, ...]
    line: int


@dataclass
class Use:
    module: tuple[str, ...]  # module the `use` is in
    segments: tuple[str, ...]
    bound: str  # name it brings into the module


@dataclass
class FileScan:
    refs: list[Ref] = field(default_factory=list)
    uses: list[Use] = field(default_factory=list)
    fns: list[FnInfo] = field(default_factory=list)
    mod_decls: list[ModDecl] = field(default_factory=list)
    inline_mods: list[tuple[str, ...]] = field(default_factory=list)  # non-test, relative
    test_spans: list[tuple[int, int]] = field(default_factory=list)
    test_file: bool = False  # `#![cfg(test)]` at the top


@dataclass
class _Frame:
    kind: str  # file, mod, fn, other
    test: bool
    mod: tuple[str, ...]  # inline module path relative to the file
    name: str = ""
    start: int = 0
    span_start: int = 0  # first attribute line of a #[cfg(test)] module
    test_span: bool = False
    # state of the item being read in this frame
    pdepth: int = 0
    attr_test: bool = False  # #[cfg(test)] seen
    attr_testfn: bool = False  # #[test], #[tokio::test], ...
    attr_line: int = 0
    path_attr: str | None = None
    fn_name: str | None = None
    fn_line: int = 0
    fn_pdepth: int = 0

    def clear_item(self) -> None:
        self.attr_test = self.attr_testfn = False
        self.attr_line = 0
        self.path_attr = None
        self.fn_name = None


def _is(tok: Tok | None, text: str) -> bool:
    return tok is not None and tok.text == text and tok.kind in ("punct", "ident")


def _attr_kind(body: list[Tok]) -> tuple[bool, bool, str | None]:
    """(cfg(test), test-fn marker, #[path = "..."] value) of an attribute body."""
    if not body:
        return False, False, None
    path: list[str] = []
    k = 0
    while k < len(body) and body[k].kind == "ident":
        path.append(body[k].text)
        if k + 1 < len(body) and body[k + 1].text == "::":
            k += 2
        else:
            k += 1
            break
    idents = [t.text for t in body[k:] if t.kind == "ident"]
    cfg_test = path == ["cfg"] and "test" in idents and not {"not", "any", "feature"} & set(idents)
    testfn = bool(path) and path[-1] in ("test", "rstest", "test_case", "bench")
    path_attr = None
    if path == ["path"] and len(body) >= 3 and body[2].kind == "lit":
        path_attr = body[2].text.strip('"')
    return cfg_test, testfn, path_attr


def _parse_use_tree(toks: list[Tok], i: int, prefix: list[str], out: list[tuple[list[str], int, str]]) -> int:
    """Leaves of a use tree as (path segments, line, name bound: alias, last segment or `*`)."""
    segs = list(prefix)
    if _is(toks[i] if i < len(toks) else None, "::"):
        i += 1
    while i < len(toks):
        t = toks[i]
        if _is(t, "{"):
            i += 1
            while i < len(toks) and not _is(toks[i], "}") and not _is(toks[i], ";"):
                i = _parse_use_tree(toks, i, segs, out)
                if i < len(toks) and _is(toks[i], ","):
                    i += 1
            return i + 1 if i < len(toks) and _is(toks[i], "}") else i
        if _is(t, "*"):
            out.append((segs, t.line, "*"))
            return i + 1
        if t.kind == "ident":
            segs = segs + [t.text]
            i += 1
            if i < len(toks) and _is(toks[i], "::"):
                i += 1
                continue
            bound = segs[-2] if t.text == "self" and len(segs) > 1 else t.text
            if i + 1 < len(toks) and _is(toks[i], "as"):
                bound = toks[i + 1].text
                i += 2
            out.append((segs, t.line, bound))
            return i
        return i + 1 if not (_is(t, ";") or _is(t, "}") or _is(t, ",")) else i
    return i


def scan_file(src: str, base: tuple[str, ...] = ()) -> FileScan:
    """Functions, module declarations, test spans and module references of one file.

    `base` is the module path of the file from its crate root; references are
    recorded with the full module path of the code making them."""
    toks = lex(src)
    out = FileScan()
    stack = [_Frame("file", False, ())]
    i, n = 0, len(toks)

    def nxt(k: int) -> Tok | None:
        return toks[k] if k < n else None

    while i < n:
        t = toks[i]
        f = stack[-1]
        in_test = f.test or f.attr_test
        # Attributes: #[...] and #![...]
        if _is(t, "#") and (_is(nxt(i + 1), "[") or (_is(nxt(i + 1), "!") and _is(nxt(i + 2), "["))):
            inner = _is(nxt(i + 1), "!")
            j = i + (3 if inner else 2)
            depth, body = 1, []
            while j < n and depth:
                if toks[j].text in ("[", "(", "{") and toks[j].kind == "punct":
                    depth += 1
                elif toks[j].text in ("]", ")", "}") and toks[j].kind == "punct":
                    depth -= 1
                if depth:
                    body.append(toks[j])
                j += 1
            cfg_test, testfn, path_attr = _attr_kind(body)
            if inner:
                if cfg_test:
                    f.test = True
                    if f.kind == "file":
                        out.test_file = True
            else:
                if not f.attr_line:
                    f.attr_line = t.line
                f.attr_test |= cfg_test
                f.attr_testfn |= testfn
                if path_attr:
                    f.path_attr = path_attr
            i = j
            continue
        if t.kind == "ident" and t.text == "mod" and f.pdepth == 0 and nxt(i + 1) and nxt(i + 1).kind == "ident":
            name = toks[i + 1].text
            after = nxt(i + 2)
            if _is(after, ";"):
                out.mod_decls.append(ModDecl(name, f.mod, in_test, f.path_attr, t.line))
                f.clear_item()
                i += 3
                continue
            if _is(after, "{"):
                fr = _Frame("mod", in_test, f.mod + (name,), name=name, start=t.line)
                if f.attr_test and not f.test:
                    fr.test_span, fr.span_start = True, f.attr_line or t.line
                if not in_test:
                    out.inline_mods.append(fr.mod)
                f.clear_item()
                stack.append(fr)
                i += 3
                continue
        if t.kind == "ident" and t.text == "fn" and nxt(i + 1) and nxt(i + 1).kind == "ident":
            f.fn_name, f.fn_line, f.fn_pdepth = toks[i + 1].text, t.line, f.pdepth
            i += 2
            continue
        if t.kind == "punct":
            if t.text in "([":
                f.pdepth += 1
            elif t.text in ")]":
                f.pdepth = max(0, f.pdepth - 1)
            elif t.text == ";":
                if f.pdepth == 0:
                    f.clear_item()
            elif t.text == "{":
                if f.fn_name is not None and f.pdepth == f.fn_pdepth:
                    fr = _Frame("fn", in_test or f.attr_testfn, f.mod, name=f.fn_name, start=f.fn_line)
                    f.clear_item()
                elif f.pdepth == 0:
                    fr = _Frame("other", in_test, f.mod)
                    f.clear_item()
                else:
                    fr = _Frame("other", in_test, f.mod)
                stack.append(fr)
            elif t.text == "}":
                if len(stack) > 1:
                    done = stack.pop()
                    if done.kind == "fn":
                        out.fns.append(FnInfo(done.name, done.start, t.line, done.test))
                    if done.test_span:
                        out.test_spans.append((done.span_start, t.line))
                    if stack[-1].pdepth == 0:
                        stack[-1].clear_item()
            i += 1
            continue
        if not in_test and t.kind == "ident":
            if t.text == "use" and f.pdepth == 0:
                leaves: list[tuple[list[str], int, str]] = []
                j = _parse_use_tree(toks, i + 1, [], leaves)
                for segs, line, bound in leaves:
                    if segs and segs[0] in ("crate", "super", "self"):
                        out.refs.append(Ref(base + f.mod, tuple(segs), line))
                    if segs and bound != "*":
                        out.uses.append(Use(base + f.mod, tuple(segs), bound))
                # the rest of the statement (up to ;) is read normally
                i = max(j, i + 1)
                continue
            if t.text in ("crate", "super", "self") and _is(nxt(i + 1), "::") and not _is(toks[i - 1] if i else None, "::"):
                segs = [t.text]
                j = i + 1
                while j + 1 < n and _is(toks[j], "::") and toks[j + 1].kind == "ident":
                    segs.append(toks[j + 1].text)
                    j += 2
                out.refs.append(Ref(base + f.mod, tuple(segs), t.line))
                i = j
                continue
        i += 1
    return out


def effective_lines(src: str, scan: FileScan) -> tuple[int, int]:
    """(lines counted for the size rule, total lines)."""
    lines = src.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    total = len(lines)
    counted = [True] * (total + 1)
    counted[0] = False
    spans = sorted(scan.test_spans)
    for a, b in spans:
        for k in range(a, min(b, total) + 1):
            counted[k] = False
    if spans:
        last_end = max(b for _, b in spans)
        if all(not lines[k - 1].strip() for k in range(last_end + 1, total + 1)):
            for k in range(last_end + 1, total + 1):
                counted[k] = False
    return sum(counted), total


# ---------------------------------------------------------------------------
# Graphs


def tarjan_scc(nodes, edges: dict) -> list[list]:
    """Strongly connected components (iterative Tarjan), each sorted; only
    components with more than one node or a self-loop."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    result: list[list] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in edges.get(v, ()):
                    result.append(sorted(comp))
    return sorted(result)


def shortest_cycle(comp: list, edges: dict) -> list:
    """A shortest cycle through comp[0] inside the component, as a node list."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    q = deque([start])
    while q:
        v = q.popleft()
        for w in sorted(edges.get(v, ())):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                q.append(w)
    return comp + [start]


def toposort(nodes, edges: dict) -> list:
    """Nodes with their dependencies first (ties by name); nodes in cycles last."""
    remaining = set(nodes)
    done: list = []
    while remaining:
        ready = sorted(v for v in remaining if not (set(edges.get(v, ())) & remaining))
        if not ready:
            done.extend(sorted(remaining))
            break
        done.extend(ready)
        remaining -= set(ready)
    return done


# ---------------------------------------------------------------------------
# Workspace


def run_cargo(args: list[str], root: str) -> str:
    cmd = ["cargo", *args, "--manifest-path", os.path.join(root, "Cargo.toml")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    except FileNotFoundError as e:
        raise CheckError("cargo not found on PATH") from e
    except subprocess.TimeoutExpired as e:
        raise CheckError(f"`{' '.join(cmd)}` timed out") from e
    if proc.returncode != 0:
        raise CheckError(f"`{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
    return proc.stdout


def rel(path: str, root: str) -> str:
    return os.path.relpath(path, root)


@dataclass
class Target:
    package: str
    name: str
    kind: str  # lib, bin, ...
    root_file: str

    @property
    def label(self) -> str:
        return self.package if self.kind == "lib" else f"{self.package} ({self.kind} {self.name})"


@dataclass
class Workspace:
    root: str
    packages: dict[str, str]  # name -> directory
    deps: dict[str, set[str]]  # normal + build deps on members
    dev_deps: dict[str, set[str]]
    targets: list[Target]
    test_target_files: set[str]


def load_workspace(root: str) -> Workspace:
    meta = json.loads(run_cargo(["metadata", "--format-version", "1", "--no-deps"], root))
    members = set(meta["workspace_members"])
    pkgs = [p for p in meta["packages"] if p["id"] in members]
    names = {p["name"] for p in pkgs}
    packages, deps, dev_deps = {}, {}, {}
    targets: list[Target] = []
    test_files: set[str] = set()
    for p in pkgs:
        name = p["name"]
        packages[name] = os.path.dirname(p["manifest_path"])
        deps[name], dev_deps[name] = set(), set()
        for d in p["dependencies"]:
            if d["name"] not in names or d.get("path") is None:
                continue
            (dev_deps if d.get("kind") == "dev" else deps)[name].add(d["name"])
        for t in p["targets"]:
            kinds = set(t["kind"])
            if kinds & {"test", "bench"}:
                test_files.add(os.path.realpath(t["src_path"]))
            elif kinds & {"lib", "rlib", "proc-macro", "cdylib", "dylib", "staticlib", "bin"}:
                kind = "bin" if "bin" in kinds else "lib"
                targets.append(Target(name, t["name"], kind, t["src_path"]))
    return Workspace(root, packages, deps, dev_deps, targets, test_files)


def rust_files(ws: Workspace) -> list[str]:
    pkg_dirs = {os.path.realpath(d) for d in ws.packages.values()}
    files: list[str] = []
    for d in sorted(pkg_dirs):
        for cur, dirs, fs in os.walk(d):
            dirs[:] = sorted(
                x
                for x in dirs
                if not x.startswith(".")
                and x != "target"
                and os.path.realpath(os.path.join(cur, x)) not in pkg_dirs
            )
            files.extend(os.path.join(cur, x) for x in sorted(fs) if x.endswith(".rs"))
    return files


# ---------------------------------------------------------------------------
# Rules


@dataclass
class RuleResult:
    name: str
    ok: bool
    line: str
    details: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)


def check_crate_cycles(ws: Workspace) -> tuple[RuleResult, RuleResult, int]:
    names = sorted(ws.packages)
    cycles = tarjan_scc(names, ws.deps)
    details = []
    for comp in cycles:
        cyc = shortest_cycle(comp, ws.deps)
        details.append("cycle: " + " -> ".join(cyc))
    res = RuleResult(
        "crate cycles",
        not cycles,
        f"crate cycles: {len(cycles)} among {len(names)} workspace crates (normal+build dependencies)"
        if cycles
        else f"crate cycles: none among {len(names)} workspace crates (normal+build dependencies)",
        details,
    )
    all_edges = {k: ws.deps[k] | ws.dev_deps[k] for k in names}
    dev_cycles = [c for c in tarjan_scc(names, all_edges) if c not in cycles]
    info = RuleResult("dev cycles", True, "dev-dependency cycles: none")
    if dev_cycles:
        lines = []
        for comp in dev_cycles:
            cyc = shortest_cycle(comp, all_edges)
            hops = []
            for a, b in zip(cyc, cyc[1:]):
                hops.append(f"{a} -> {b}" + (" (dev)" if b not in ws.deps[a] else ""))
            lines.append("cycle: " + ", ".join(hops))
        info = RuleResult("dev cycles", True, f"dev-dependency cycles: {len(dev_cycles)} (allowed by cargo; not import cycles)", lines)
    return res, info, len(cycles)


@dataclass
class CrateModules:
    target: Target
    files: dict[str, tuple[str, ...]]  # real path -> module path
    modules: set[tuple[str, ...]]
    scans: dict[str, FileScan]
    test_files: set[str]
    orphans: list[str]
    missing: list[tuple[str, int, str]]  # declaring file, line, module name


def _mod_file_candidates(directory: str, name: str) -> list[str]:
    return [os.path.join(directory, name + ".rs"), os.path.join(directory, name, "mod.rs")]


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def walk_target(t: Target) -> CrateModules:
    """Follow `mod` declarations from a target's root file."""
    root_file = os.path.realpath(t.root_file)
    files: dict[str, tuple[str, ...]] = {}
    modules: set[tuple[str, ...]] = {()}
    scans: dict[str, FileScan] = {}
    test_files: set[str] = set()
    missing: list[str] = []
    queue = deque([(root_file, (), True, False)])  # path, module, owns-directory, test
    while queue:
        path, mod, mod_rs, test = queue.popleft()
        if path in files or path in test_files:
            continue
        if test:
            test_files.add(path)
            continue
        files[path] = mod
        scan = scan_file(_read(path), mod)
        scans[path] = scan
        if scan.test_file:
            test_files.add(path)
            del files[path]
            continue
        for im in scan.inline_mods:
            modules.add(mod + im)
        directory = os.path.dirname(path) if mod_rs else os.path.splitext(path)[0]
        for d in scan.mod_decls:
            sub_dir = os.path.join(directory, *d.inline_prefix)
            child = mod + d.inline_prefix + (d.name,)
            if d.path_attr:
                base_dir = os.path.dirname(path) if not d.inline_prefix else sub_dir
                cands = [os.path.normpath(os.path.join(base_dir, d.path_attr))]
            else:
                cands = _mod_file_candidates(sub_dir, d.name)
            found = next((c for c in cands if os.path.isfile(c)), None)
            if found is None:
                if not d.test:
                    missing.append((path, d.line, d.name))
                continue
            found = os.path.realpath(found)
            if not d.test:
                modules.add(child)
            owns = bool(d.path_attr) or os.path.basename(found) == "mod.rs"
            queue.append((found, child, owns, d.test))
    return CrateModules(t, files, modules, scans, test_files, [], missing)


def add_orphans(ws: Workspace, crates: list[CrateModules]) -> None:
    """Files under a package's src/ that no `mod` reaches (being added, or dead
    code) are read as modules of its lib (or main.rs) target, mapped by the
    path convention, so that their imports still count."""
    for pkg in ws.packages:
        mine = [cm for cm in crates if cm.target.package == pkg]
        reached = set().union(*(set(cm.files) | cm.test_files for cm in mine)) if mine else set()
        owner = next((cm for cm in mine if cm.target.kind == "lib"), None) or next(
            (cm for cm in mine if os.path.basename(cm.target.root_file) == "main.rs"), None
        )
        if owner is None:
            continue
        src_dir = os.path.dirname(os.path.realpath(owner.target.root_file))
        for cur, dirs, fs in os.walk(src_dir):
            dirs[:] = sorted(x for x in dirs if not (cur == src_dir and x == "bin"))
            for x in sorted(fs):
                p = os.path.realpath(os.path.join(cur, x))
                if not x.endswith(".rs") or p in reached:
                    continue
                if cur == src_dir and x in ("lib.rs", "main.rs"):
                    continue
                parts = os.path.relpath(p, src_dir)[:-3].split(os.sep)
                if parts[-1] == "mod":
                    parts = parts[:-1]
                if x == "tests.rs" or TEST_DIRS & set(parts[:-1]):
                    owner.test_files.add(p)
                    continue
                mod = tuple(parts)
                scan = scan_file(_read(p), mod)
                if scan.test_file:
                    owner.test_files.add(p)
                    continue
                owner.files[p] = mod
                owner.scans[p] = scan
                owner.modules.add(mod)
                for im in scan.inline_mods:
                    owner.modules.add(mod + im)
                owner.orphans.append(p)


Aliases = dict[tuple[tuple[str, ...], str], tuple[tuple[str, ...], tuple[str, ...]]]


def build_aliases(cm: "CrateModules") -> Aliases:
    """(module, name) -> (module of the `use`, its path) for every name a
    non-test `use` brings into a module, so that `crate::Name` reaching an item
    through a re-export is attributed to the module that defines it."""
    aliases: Aliases = {}
    for path, scan in cm.scans.items():
        if path not in cm.files:
            continue
        for u in scan.uses:
            segs = u.segments
            if segs[-1] == "self":
                segs = segs[:-1]
            if not segs:
                continue
            if segs[0] not in ("crate", "super", "self"):
                if u.module + (segs[0],) not in cm.modules:
                    continue  # another crate
                segs = ("self",) + segs
            aliases.setdefault((u.module, u.bound), (u.module, segs))
    return aliases


def resolve(
    cur: tuple[str, ...],
    segs: tuple[str, ...],
    modules: set[tuple[str, ...]],
    aliases: Aliases | None = None,
    _depth: int = 0,
) -> tuple[str, ...] | None:
    """The module a `crate::`/`super::`/`self::` path names: its longest module
    prefix, followed through `use` re-exports when the next segment is one."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), list(segs[1:])
    elif segs[0] in ("super", "self"):
        base, rest = cur, list(segs)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            rest.pop(0)
    else:
        return None
    target, k = base, 0
    while k < len(rest):
        if rest[k] == "self":
            k += 1
        elif target + (rest[k],) in modules:
            target, k = target + (rest[k],), k + 1
        else:
            break
    if aliases and k < len(rest) and _depth < 8:
        alias = aliases.get((target, rest[k]))
        if alias is not None:
            via = resolve(alias[0], alias[1] + tuple(rest[k + 1 :]), modules, aliases, _depth + 1)
            if via is not None:
                return via
    return target


def _related(a: tuple, b: tuple) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


def modname(m: tuple[str, ...]) -> str:
    return "::".join(m) if m else "crate"


@dataclass
class ModuleGraph:
    crate: CrateModules
    top_edges: dict[str, set[str]]
    full_edges: dict[tuple, set[tuple]]
    evidence: dict[tuple, list[str]]  # (a, b) -> ["file:line path"]
    full_evidence: dict[tuple, list[str]]


def module_graph(cm: CrateModules, root: str) -> ModuleGraph:
    top: dict[str, set[str]] = defaultdict(set)
    full: dict[tuple, set[tuple]] = defaultdict(set)
    ev: dict[tuple, list[str]] = defaultdict(list)
    fev: dict[tuple, list[str]] = defaultdict(list)
    aliases = build_aliases(cm)
    for path, scan in cm.scans.items():
        if path not in cm.files:
            continue
        for r in scan.refs:
            target = resolve(r.module, r.segments, cm.modules, aliases)
            if target is None:
                continue
            where = f"{rel(path, root)}:{r.line} `{'::'.join(r.segments)}`"
            if not _related(r.module, target):
                full[r.module].add(target)
                fev[(r.module, target)].append(where)
            if r.module and target and r.module[0] != target[0]:
                top[r.module[0]].add(target[0])
                ev[(r.module[0], target[0])].append(where)
    return ModuleGraph(cm, top, full, ev, fev)


def _edge_lines(cyc: list, evidence: dict, fmt, limit: int = 3) -> list[str]:
    out = []
    for a, b in zip(cyc, cyc[1:]):
        ws = evidence.get((a, b), [])
        extra = f" (+{len(ws) - limit} more)" if len(ws) > limit else ""
        out.append(f"    {fmt(a)} -> {fmt(b)}: " + "; ".join(ws[:limit]) + extra)
    return out


def check_module_cycles(graphs: list[ModuleGraph]) -> tuple[RuleResult, RuleResult | None, int]:
    details, info, n_modules, n_cycles = [], [], 0, 0
    for g in graphs:
        n_modules += len(g.crate.modules)
        tops = {m[0] for m in g.crate.modules if m}
        for comp in tarjan_scc(tops, g.top_edges):
            n_cycles += 1
            cyc = shortest_cycle(comp, g.top_edges)
            details.append(f"{g.crate.target.label}: {' -> '.join(cyc)}" + (f"  (component: {', '.join(comp)})" if len(comp) > len(cyc) - 1 else ""))
            # every edge inside the component, with where it is made
            for a in comp:
                for b in sorted(g.top_edges.get(a, ())):
                    if b in comp:
                        details.extend(_edge_lines([a, b], g.evidence, str))
        for comp in tarjan_scc(g.crate.modules, g.full_edges):
            if len({m[0] for m in comp}) > 1:
                continue  # already reported at top-level granularity
            cyc = shortest_cycle(comp, g.full_edges)
            info.append(f"{g.crate.target.label}: {' -> '.join(modname(m) for m in cyc)}")
            info.extend(_edge_lines(cyc, g.full_evidence, modname))
    ok = n_cycles == 0
    res = RuleResult(
        "module cycles",
        ok,
        f"module cycles: {'none' if ok else n_cycles} between top-level modules "
        f"({n_modules} modules, {len(graphs)} of them crate roots of lib/bin targets)",
        details,
    )
    inf = None
    if info:
        inf = RuleResult("nested module cycles", True, "nested module cycles (inside one top-level module; not counted):", info)
    return res, inf, n_cycles


def check_protocol(root: str, crate: str, packages: dict[str, str], tree_text: str | None = None) -> RuleResult:
    if crate not in packages:
        return RuleResult("protocol deps", False, f"protocol deps: crate {crate} is not a workspace member")
    if tree_text is None:
        # --locked: a check must not rewrite Cargo.lock under other people's feet
        try:
            tree_text = run_cargo(["tree", "--locked", "-p", crate, "-e", "normal", "--prefix", "depth", "-f", "{p}"], root)
        except CheckError as e:
            msg = str(e).splitlines()
            return RuleResult("protocol deps", False, f"protocol deps: could not list {crate}'s dependencies", msg[-3:])
    return protocol_verdict(crate, tree_text)


def protocol_verdict(crate: str, tree_text: str) -> RuleResult:
    """Reads `cargo tree --prefix depth -f {p}` output; lines look like `2tokio v1.0.0`."""
    chain: list[str] = []
    bad: dict[str, list[str]] = {}
    seen: set[str] = set()
    for raw in tree_text.splitlines():
        m = re.match(r"(\d+)(\S+) (v\S+)", raw.strip())
        if not m:
            continue
        depth, name, ver = int(m.group(1)), m.group(2), m.group(3)
        del chain[depth:]
        chain.append(name)
        seen.add(name)
        if any(fnmatch.fnmatchcase(name, pat) for pat in RUNTIME_CRATES):
            key = f"{name} {ver}"
            if key not in bad:
                bad[key] = [" -> ".join(chain)]
    seen.discard(crate)
    if bad:
        details = [f"{k} via {v[0]}" for k, v in sorted(bad.items())]
        return RuleResult("protocol deps", False, f"protocol deps: {crate} pulls in {len(bad)} runtime crate(s)", details)
    return RuleResult(
        "protocol deps",
        True,
        f"protocol deps: ok, {crate} depends on {len(seen)} crates (normal, transitive), none of {', '.join(RUNTIME_CRATES)}",
    )


def size_checks(ws: Workspace, crates: list[CrateModules], max_file: int, max_fn: int):
    root = ws.root
    test_only = set(ws.test_target_files)
    for cm in crates:
        test_only |= cm.test_files
    file_rows, fn_rows = [], []
    for path in rust_files(ws):
        real = os.path.realpath(path)
        parts = rel(real, os.path.realpath(root)).split(os.sep)
        if real in test_only or TEST_DIRS & set(parts[:-1]) or parts[-1] == "tests.rs":
            continue
        src = _read(real)
        scan = scan_file(src)
        if scan.test_file:
            continue
        counted, total = effective_lines(src, scan)
        file_rows.append((counted, total, rel(real, root)))
        for f in scan.fns:
            if not f.test:
                fn_rows.append((f.length, rel(real, root), f.start, f.name))
    file_rows.sort(key=lambda r: (-r[0], r[2]))
    fn_rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    big_files = [r for r in file_rows if r[0] > max_file]
    long_fns = [r for r in fn_rows if r[0] > max_fn]
    fdetails = [f"{p}: {c} lines" + (f" ({t} with tests)" if t != c else "") for c, t, p in big_files]
    fndetails = [f"{p}:{ln} fn {name}: {length} lines" for length, p, ln, name in long_fns]
    largest = f"{file_rows[0][2]} {file_rows[0][0]}" if file_rows else "none"
    longest = f"{fn_rows[0][1]}:fn {fn_rows[0][3]} {fn_rows[0][0]}" if fn_rows else "none"
    fres = RuleResult(
        "file size",
        not big_files,
        f"files <= {max_file} lines: " + (f"ok, {len(file_rows)} non-test files (largest: {largest})" if not big_files else f"{len(big_files)} of {len(file_rows)} non-test files over (largest: {largest})"),
        fdetails,
    )
    fnres = RuleResult(
        "fn size",
        not long_fns,
        f"fns <= {max_fn} lines: " + (f"ok, {len(fn_rows)} non-test fns (longest: {longest})" if not long_fns else f"{len(long_fns)} of {len(fn_rows)} non-test fns over (longest: {longest})"),
        fndetails,
    )
    fsum = f"files <= {max_file}: " + ("ok" if not big_files else f"{len(big_files)} over") + f" (largest: {largest})"
    fnsum = f"fns <= {max_fn}: " + ("ok" if not long_fns else f"{len(long_fns)} over") + f" (longest: {longest})"
    return fres, fnres, fsum, fnsum


# ---------------------------------------------------------------------------


def print_result(r: RuleResult, out) -> None:
    tag = "info" if r.name in ("dev cycles", "nested module cycles", "notes") else ("ok  " if r.ok else "FAIL")
    print(f"[{tag}] {r.line}", file=out)
    for d in r.details:
        print(f"         {d}", file=out)


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--root", default=os.path.dirname(here), help="workspace root (default: the repository of this script)")
    ap.add_argument("--max-file-lines", type=int, default=600)
    ap.add_argument("--max-fn-lines", type=int, default=100)
    ap.add_argument("--protocol-crate", default=PROTOCOL_CRATE)
    ap.add_argument("--report", action="store_true", help="print the crate dependency graph first")
    ap.add_argument("--report-modules", action="store_true", help="also print each crate target's top-level module graph")
    args = ap.parse_args(argv)
    root = os.path.abspath(args.root)
    try:
        ws = load_workspace(root)
        crates = [walk_target(t) for t in ws.targets]
        add_orphans(ws, crates)
        graphs = [module_graph(cm, root) for cm in crates]
        if args.report or args.report_modules:
            print("crate dependency graph (normal and build dependencies on workspace crates):", file=out)
            for name in toposort(ws.packages, ws.deps):
                deps = ", ".join(sorted(ws.deps[name])) or "(none)"
                print(f"  {name} -> {deps}", file=out)
            if args.report_modules:
                for g in graphs:
                    tops = sorted({m[0] for m in g.crate.modules if m})
                    if not tops:
                        continue
                    print(f"{g.crate.target.label} modules:", file=out)
                    for m in toposort(tops, g.top_edges):
                        print(f"  {m} -> {', '.join(sorted(g.top_edges.get(m, ()))) or '(none)'}", file=out)
            print(file=out)
        crate_res, dev_info, n_crate_cycles = check_crate_cycles(ws)
        mod_res, nested_info, n_mod_cycles = check_module_cycles(graphs)
        proto_res = check_protocol(root, args.protocol_crate, ws.packages)
        file_res, fn_res, fsum, fnsum = size_checks(ws, crates, args.max_file_lines, args.max_fn_lines)
    except CheckError as e:
        print(f"arch-check: error: {e}", file=sys.stderr)
        return 2
    notes = []
    for cm in crates:
        for p in cm.orphans:
            notes.append(f"{rel(p, root)} is not declared by any `mod` of {cm.target.label}; read as module {modname(cm.files[p])}")
        for path, line, name in cm.missing:
            notes.append(f"{rel(path, root)}:{line}: no file for `mod {name};` ({cm.target.label})")
    results = [crate_res, dev_info, mod_res, nested_info, proto_res, file_res, fn_res]
    if notes:
        results.append(RuleResult("notes", True, "notes:", notes))
    for r in results:
        if r is not None:
            print_result(r, out)
    n_modules = sum(len(cm.modules) for cm in crates)
    proto = "protocol deps ok" if proto_res.ok else "protocol deps FAIL"
    summary = (
        f"arch-check: {len(ws.packages)} crates, {n_crate_cycles} crate cycles; "
        f"{n_modules} modules, {n_mod_cycles} module cycles; {proto}; {fsum}; {fnsum}"
    )
    failed = [r.name for r in (crate_res, mod_res, proto_res, file_res, fn_res) if not r.ok]
    print(summary + (f" -- FAILED: {', '.join(failed)}" if failed else ""), file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)

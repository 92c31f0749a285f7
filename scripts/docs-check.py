#!/usr/bin/env python3
"""Checks Shoal's documentation against the code (`make docs-check`, a CI step).

Usage: scripts/docs-check.py [--orchestrator PATH] [--worker PATH] [--sim PATH]
                             [--root DIR] [--self-test]

1. Configuration keys (docs/configuration.md)

   Every key `shoal-orchestrator` and `shoal-worker` accept must be a row of
   a table in docs/configuration.md whose first header cell is `key`, every
   key documented there must be accepted by a binary, and a documented
   default must equal the code's. The `shoal-sim` flags are checked the same
   way against the tables whose first header cell is `flag`.

   Where the keys come from. The binaries are asked, not the source parsed,
   so that the check sees exactly what the code accepts, whatever crate a
   settings struct moves to and whatever serde attributes it carries:

   - `--print-config` prints the effective configuration as JSON, every
     section with its defaults (run with no SHOAL_* variables, in an empty
     directory so that no ./shoal.toml is read). Its leaves are keys, and
     their values the defaults.
   - Objects in that JSON are either settings structs or open maps
     (`kafka.options`, `feed.headers`, `rules.events`). To tell them apart,
     the binary is run again with one unknown key inside the object
     (SHOAL__<PATH>__DOCS_CHECK_PROBE=x). Settings structs deny unknown
     fields, so a struct rejects it (exit 2) with serde's message "unknown
     field `docs_check_probe`, expected one of `a`, `b`, ...", which lists
     every field the struct accepts; an open map accepts it. An open map is
     one key, documented as `section.map.<name>` (or `section.map.*`).
   - Fields that a struct accepts but `--print-config` does not print (an
     `Option` skipped when `None`, say) are found through that same list and
     are keys too, with an unknown default. The sections a binary only
     accepts to ignore them (the other binary's) are not printed at the top
     level and are taken from the other binary.
   - Simulator flags come from `shoal-sim --help` (its "Options:" section),
     with their `[default: ...]` and `[env: ...]`.

   Defaults are compared when the documented default is a single code span
   (`5000`, `shoal`, `ingest,decisions,results` for a list) or the word
   `empty` (an empty string, list or map). Any other text (prose, several
   code spans, "none", "off") is not compared: that is how defaults that
   depend on the environment, such as `worker.id`, are documented.

2. Links (README.md, docs/*.md, deploy/helm/shoal/README.md if present)

   Every relative link and image (`[text](path)`, `[text](path#anchor)`,
   `[text](#anchor)`, reference definitions, `href="..."`/`src="..."`) must
   name an existing file or directory inside the repository, and an anchor
   into a Markdown file must match one of its headings, slugged the way
   GitHub does (lower case, punctuation dropped, spaces to hyphens, `-1`,
   `-2` for repeats; ATX `#` headings and explicit `id`/`name` anchors).
   Links with a scheme (https:, mailto:) are not fetched. Code blocks and
   code spans are skipped.

Output: one line `docs-check: N config keys documented (D defaults checked),
F simulator flags (E defaults checked), L links ok` and exit 0; or one line
per problem, naming the file and line, and exit 1. Exit 2 when the binaries
cannot be run: build them first (`make build`, or
`cargo build --workspace --bins`).

`--self-test` runs scripts/test_docs_check.py, which shows that each check
fails when it should. Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
import urllib.parse
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

PROBE = "docs_check_probe"
CONFIG_DOC = "docs/configuration.md"
MISSING = object()  # a key the binary accepts but does not print


class CannotRun(Exception):
    """A binary is missing or does not behave as expected."""


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


# --------------------------------------------------------------------------
# Keys the binaries accept


def clean_env() -> dict[str, str]:
    """The environment without Shoal's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SHOAL")}


def run_binary(binary: Path, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = clean_env()
    env.update(extra_env or {})
    with tempfile.TemporaryDirectory(prefix="docs-check-") as cwd:
        try:
            return subprocess.run(
                [str(binary), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
            )
        except OSError as error:
            raise CannotRun(f"cannot run {binary}: {error}") from error
        except subprocess.TimeoutExpired as error:
            raise CannotRun(f"{binary} {' '.join(args)} did not finish within 60 s") from error


def env_name(path: list[str]) -> str:
    return "SHOAL__" + "__".join(part.upper() for part in path)


UNKNOWN_FIELD = re.compile(r"unknown field `" + PROBE + r"`(?:, expected (?P<rest>.*))?")


def probe(binary: Path, path: list[str]) -> tuple[str, list[str]]:
    """('map', []) if the object at `path` accepts any key, else ('struct', fields)."""
    last = ""
    for value in ("x", "1", "true"):
        done = run_binary(binary, ["--print-config"], {env_name([*path, PROBE]): value})
        if done.returncode == 0:
            return "map", []
        last = done.stderr.strip() or done.stdout.strip()
        match = UNKNOWN_FIELD.search(last)
        if match:
            rest = (match.group("rest") or "").split(" for key ")[0]
            return "struct", re.findall(r"`([^`]+)`", rest)
    raise CannotRun(f"{binary}: {env_name([*path, PROBE])}: unexpected response: {last[:300]}")


def binary_keys(binary: Path) -> dict[str, object]:
    """Dotted key -> default, for every key `binary` accepts. Open maps end in `.*`."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise CannotRun(f"{binary} is not an executable file; build the binaries first (make build)")
    done = run_binary(binary, ["--print-config"])
    if done.returncode != 0:
        raise CannotRun(f"{binary} --print-config exited {done.returncode}: {done.stderr.strip()[:300]}")
    try:
        config = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise CannotRun(f"{binary} --print-config did not print JSON: {error}") from error
    if not isinstance(config, dict):
        raise CannotRun(f"{binary} --print-config did not print a JSON object")
    keys: dict[str, object] = {}

    def walk(obj: dict, path: list[str]) -> None:
        for name, value in obj.items():
            here = [*path, name]
            if isinstance(value, dict):
                kind, fields = probe(binary, here)
                if kind == "map":
                    keys[".".join([*here, "*"])] = value
                    continue
                walk(value, here)
                for missing in fields:
                    if missing not in value:
                        keys[".".join([*here, missing])] = MISSING
            else:
                keys[".".join(here)] = value

    walk(config, [])
    return keys


def sim_flags(binary: Path) -> dict[str, dict[str, str | None]]:
    """Flag name (without --) -> {'default': ..., 'env': ...} from `--help`."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise CannotRun(f"{binary} is not an executable file; build the binaries first (make build)")
    done = run_binary(binary, ["--help"])
    if done.returncode != 0:
        raise CannotRun(f"{binary} --help exited {done.returncode}")
    return parse_help(done.stdout)


def parse_help(text: str) -> dict[str, dict[str, str | None]]:
    flags: dict[str, dict[str, str | None]] = {}
    current = None
    in_options = False
    for line in text.splitlines():
        if re.match(r"^Options:\s*$", line):
            in_options = True
            continue
        if not in_options:
            continue
        m = re.match(r"^\s+(?:-[A-Za-z0-9], )?--([a-z0-9][a-z0-9-]*)", line)
        if m:
            current = m.group(1)
            flags[current] = {"default": None, "env": None}
        if current is None:
            continue
        for d in re.finditer(r"\[default: ([^\]]*)\]", line):
            flags[current]["default"] = d.group(1)
        for e in re.finditer(r"\[env: ([A-Za-z0-9_]+)=[^\]]*\]", line):
            flags[current]["env"] = e.group(1)
    for builtin in ("help", "version"):
        flags.pop(builtin, None)
    return flags


# --------------------------------------------------------------------------
# Markdown


FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out = []
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        out.append((number, line))
    return out


def split_row(line: str) -> list[str]:
    """Cells of a table row; `\\|` is a literal pipe (also inside code spans)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells, cell, i = [], [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            cell.append("|")
            i += 2
            continue
        if line[i] == "|":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(line[i])
        i += 1
    cells.append("".join(cell).strip())
    return cells


@dataclass
class Table:
    header: list[str]
    rows: list[tuple[int, list[str]]]


def tables(text: str) -> list[Table]:
    found: list[Table] = []
    lines = prose_lines(text)
    i = 0
    while i < len(lines):
        _, line = lines[i]
        if (
            line.lstrip().startswith("|")
            and i + 1 < len(lines)
            and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1][1])
        ):
            table = Table([c.lower() for c in split_row(line)], [])
            i += 2
            while i < len(lines) and lines[i][1].lstrip().startswith("|"):
                table.rows.append((lines[i][0], split_row(lines[i][1])))
                i += 1
            found.append(table)
        else:
            i += 1
    return found


SINGLE_SPAN = re.compile(r"^`([^`]+)`$")


def single_span(cell: str) -> str | None:
    m = SINGLE_SPAN.match(cell.strip())
    return m.group(1) if m else None


def normalise_key(key: str) -> str:
    parts = key.split(".")
    if parts and (parts[-1] == "*" or re.fullmatch(r"<[^>]+>", parts[-1])):
        parts[-1] = "*"
    return ".".join(parts)


KEY_FORM = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$")


# --------------------------------------------------------------------------
# Defaults


def literal_matches(literal: str, value: object) -> bool | None:
    """Whether a documented code span equals a default; None if unknown."""
    if value is MISSING:
        return None
    if isinstance(value, bool):
        return literal == ("true" if value else "false")
    if isinstance(value, (int, float)):
        try:
            return float(literal) == float(value)
        except ValueError:
            return False
    if isinstance(value, str):
        return literal == value or literal == json.dumps(value)
    if isinstance(value, list):
        if literal.replace(" ", "") == ",".join(str(v) for v in value):
            return True
    try:
        return json.loads(literal) == value
    except (json.JSONDecodeError, ValueError):
        return False


def is_empty(value: object) -> bool:
    return value is not MISSING and value in ("", [], {})


def shown(value: object) -> str:
    if value is MISSING:
        return "(not printed)"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "empty"
    if isinstance(value, str):
        return value if value else "empty"
    return json.dumps(value)


# --------------------------------------------------------------------------
# Check 1: configuration keys and simulator flags


@dataclass
class ConfigReport:
    keys: int = 0
    defaults_checked: int = 0
    flags: int = 0
    flag_defaults_checked: int = 0


def check_config(
    root: Path,
    accepted: dict[str, list[object]],
    flags: dict[str, dict[str, str | None]],
    problems: Problems,
) -> ConfigReport:
    report = ConfigReport()
    doc = root / CONFIG_DOC
    if not doc.is_file():
        problems.add(CONFIG_DOC, "missing")
        return report
    documented: dict[str, int] = {}
    documented_flags: dict[str, int] = {}
    for table in tables(doc.read_text(encoding="utf-8")):
        kind = table.header[0] if table.header else ""
        if kind not in ("key", "flag"):
            continue
        default_col = table.header.index("default") if "default" in table.header else None
        env_col = table.header.index("env") if "env" in table.header else None
        for line, cells in table.rows:
            where = f"{CONFIG_DOC}:{line}"
            name = single_span(cells[0]) if cells else None
            if name is None:
                problems.add(where, f"the first cell of a `{kind}` table must be one code span, got {cells[0]!r}")
                continue
            default_cell = cells[default_col] if default_col is not None and default_col < len(cells) else ""
            if kind == "key":
                key = normalise_key(name)
                if not KEY_FORM.match(key):
                    problems.add(where, f"`{name}` is not a configuration key (section.key, lower case)")
                    continue
                if not first_and_known(
                    documented, key, line, accepted, where, f"`{name}`", "neither binary accepts it", problems
                ):
                    continue
                checked = check_default(where, name, default_cell, accepted[key], problems)
                report.defaults_checked += int(checked)
            else:
                flag = name.split()[0]
                if not flag.startswith("--"):
                    problems.add(where, f"`{name}` is not a --flag")
                    continue
                flag = flag[2:]
                if not first_and_known(
                    documented_flags, flag, line, flags, where, f"`--{flag}`", "shoal-sim has no such flag", problems
                ):
                    continue
                spec = flags[flag]
                checked = check_flag_default(where, flag, default_cell, spec["default"], problems)
                report.flag_defaults_checked += int(checked)
                if env_col is not None and env_col < len(cells):
                    env = single_span(cells[env_col])
                    if env is not None and env != spec["env"]:
                        problems.add(where, f"`--{flag}`: env documented as `{env}`, the code reads `{spec['env']}`")
    for key in sorted(set(accepted) - set(documented)):
        shown_key = key[:-1] + "<name>" if key.endswith(".*") else key
        problems.add(CONFIG_DOC, f"`{shown_key}` is accepted by the code but not documented")
    for flag in sorted(set(flags) - set(documented_flags)):
        problems.add(CONFIG_DOC, f"`--{flag}` (shoal-sim) is not documented")
    if not documented:
        problems.add(CONFIG_DOC, "no table with `key` as its first header cell")
    report.keys = len(set(documented) & set(accepted))
    report.flags = len(set(documented_flags) & set(flags))
    return report


def first_and_known(
    documented: dict[str, int],
    item: str,
    line: int,
    known: Container[str],
    where: str,
    shown_item: str,
    unknown: str,
    problems: Problems,
) -> bool:
    """Records that `item` is documented at `line`. False, with a problem, if it
    was documented before or the code does not know it (`unknown` says why)."""
    if item in documented:
        problems.add(where, f"{shown_item} is documented twice (also line {documented[item]})")
        return False
    documented[item] = line
    if item not in known:
        problems.add(where, f"{shown_item} is documented but {unknown}")
        return False
    return True


def check_default(where: str, name: str, cell: str, values: list[object], problems: Problems) -> bool:
    cell = cell.strip()
    if cell.lower() == "empty":
        if any(is_empty(v) for v in values):
            return True
        if all(v is MISSING for v in values):
            return False
        problems.add(where, f"`{name}`: documented default is empty, the code's is `{shown(values[0])}`")
        return True
    literal = single_span(cell)
    if literal is None:
        return False
    verdicts = [literal_matches(literal, v) for v in values]
    if all(v is None for v in verdicts):
        return False
    if not any(verdicts):
        problems.add(where, f"`{name}`: documented default `{literal}`, the code's is `{shown(values[0])}`")
    return True


def check_flag_default(where: str, flag: str, cell: str, default: str | None, problems: Problems) -> bool:
    literal = single_span(cell)
    if literal is None:
        return False
    if default is None:
        problems.add(where, f"`--{flag}`: documented default `{literal}`, but the flag has no default")
        return True
    same = literal == default
    if not same:
        try:
            same = float(literal) == float(default)
        except ValueError:
            same = False
    if not same:
        problems.add(where, f"`--{flag}`: documented default `{literal}`, the code's is `{default}`")
    return True


# --------------------------------------------------------------------------
# Check 2: links


def github_slug(heading: str) -> str:
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # images: their alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = []
    for ch in text:
        if ch in "-_ " or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for _, line in prose_lines(text):
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = github_slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            anchors.add(base if n == 0 else f"{base}-{n}")
        for a in re.finditer(r"""<[a-zA-Z]+[^>]*\s(?:id|name)=["']([^"']+)["']""", line):
            anchors.add(a.group(1))
    return anchors


INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTR = re.compile(r"""\s(?:href|src)=["']([^"']+)["']""")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def link_targets(text: str) -> list[tuple[int, str]]:
    out = []
    for number, line in prose_lines(text):
        line = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for regex in (INLINE_LINK, REF_DEF, HTML_ATTR):
            for m in regex.finditer(line):
                target = m.group(1)
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1]
                out.append((number, target))
    return out


def link_files(root: Path) -> list[Path]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    chart = root / "deploy/helm/shoal/README.md"
    if chart.is_file():
        files.append(chart)
    return [f for f in files if f.is_file()]


def check_links(root: Path, problems: Problems) -> int:
    ok = 0
    anchor_cache: dict[Path, set[str]] = {}
    root = root.resolve()
    for source in link_files(root):
        rel_source = source.relative_to(root)
        text = source.read_text(encoding="utf-8")
        for line, target in link_targets(text):
            where = f"{rel_source}:{line}"
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # external: not fetched
            path_part, _, anchor = target.partition("#")
            path_part = urllib.parse.unquote(path_part)
            if path_part == "":
                resolved = source
            elif path_part.startswith("/"):
                resolved = (root / path_part.lstrip("/")).resolve()
            else:
                resolved = (source.parent / path_part).resolve()
            try:
                resolved.relative_to(root)
            except ValueError:
                problems.add(where, f"link `{target}` points outside the repository")
                continue
            if not resolved.exists():
                problems.add(where, f"link `{target}`: {resolved.relative_to(root)} does not exist")
                continue
            if anchor and resolved.suffix.lower() == ".md" and resolved.is_file():
                if resolved not in anchor_cache:
                    anchor_cache[resolved] = anchors_of(resolved.read_text(encoding="utf-8"))
                if urllib.parse.unquote(anchor) not in anchor_cache[resolved]:
                    problems.add(
                        where, f"link `{target}`: no heading with anchor #{anchor} in {resolved.relative_to(root)}"
                    )
                    continue
            ok += 1
    return ok


# --------------------------------------------------------------------------


def collect_accepted(binaries: list[Path]) -> dict[str, list[object]]:
    accepted: dict[str, list[object]] = {}
    for binary in binaries:
        for key, default in binary_keys(binary).items():
            accepted.setdefault(key, []).append(default)
    return accepted


def run_checks(root: Path, orchestrator: Path, worker: Path, sim: Path) -> tuple[list[str], str]:
    problems = Problems()
    accepted = collect_accepted([orchestrator, worker])
    flags = sim_flags(sim)
    report = check_config(root, accepted, flags, problems)
    links = check_links(root, problems)
    summary = (
        f"docs-check: {report.keys} config keys documented ({report.defaults_checked} defaults checked), "
        f"{report.flags} simulator flags ({report.flag_defaults_checked} defaults checked), {links} links ok"
    )
    return problems.items, summary


def self_test() -> int:
    import unittest

    here = Path(__file__).resolve().parent
    suite = unittest.defaultTestLoader.discover(str(here), pattern="test_docs_check.py")
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    return 0 if result.wasSuccessful() else 1


def main(argv: list[str] | None = None) -> int:
    default_root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(
        description="Check docs/configuration.md against the binaries, and every relative link in the docs."
    )
    parser.add_argument("--root", type=Path, default=default_root, help="repository root (default: %(default)s)")
    parser.add_argument("--orchestrator", type=Path, help="default: ROOT/target/debug/shoal-orchestrator")
    parser.add_argument("--worker", type=Path, help="default: ROOT/target/debug/shoal-worker")
    parser.add_argument("--sim", type=Path, help="default: ROOT/target/debug/shoal-sim")
    parser.add_argument("--self-test", action="store_true", help="run the checker's own tests and exit")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    root = args.root.resolve()
    debug = root / "target" / "debug"
    try:
        problems, summary = run_checks(
            root,
            (args.orchestrator or debug / "shoal-orchestrator").absolute(),
            (args.worker or debug / "shoal-worker").absolute(),
            (args.sim or debug / "shoal-sim").absolute(),
        )
    except CannotRun as error:
        print(f"docs-check: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"docs-check: {problem}", file=sys.stderr)
    if problems:
        print(f"docs-check: FAILED, {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

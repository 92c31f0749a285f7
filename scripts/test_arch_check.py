#!/usr/bin/env python3
"""Tests of scripts/arch-check.py on small synthetic workspaces.

    python3 scripts/test_arch_check.py [-v]

Standard library only. Needs `cargo` on PATH (for `cargo metadata` and
`cargo tree` on the synthetic workspaces, which have path dependencies only and
so need no network).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("arch_check", os.path.join(HERE, "arch-check.py"))
ac = importlib.util.module_from_spec(_spec)
sys.modules["arch_check"] = ac
_spec.loader.exec_module(ac)

HAVE_CARGO = shutil.which("cargo") is not None


def dedent(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


def filler(n: int, indent: str = "    ") -> str:
    """n lines of statements."""
    return "".join(f"{indent}let _v{k} = {k};\n" for k in range(n))


class Tree:
    """A temporary cargo workspace: crates given as {name: {relative path: source}}."""

    def __init__(self, crates: dict[str, dict[str, str]], deps: dict[str, list[str]] | None = None,
                 dev_deps: dict[str, list[str]] | None = None, extra: dict[str, str] | None = None):
        self.dir = tempfile.mkdtemp(prefix="arch-check-test-")
        deps = deps or {}
        dev_deps = dev_deps or {}
        members = sorted(crates)
        self.write("Cargo.toml", '[workspace]\nresolver = "2"\nmembers = [%s]\n' % ", ".join(f'"{m}"' for m in members))
        for name, files in crates.items():
            lines = [f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n', "[dependencies]\n"]
            lines += [f'{d} = {{ path = "../{d}" }}\n' for d in deps.get(name, [])]
            lines.append("[dev-dependencies]\n")
            lines += [f'{d} = {{ path = "../{d}" }}\n' for d in dev_deps.get(name, [])]
            self.write(f"{name}/Cargo.toml", "".join(lines))
            for path, src in files.items():
                self.write(f"{name}/{path}", dedent(src))
        for path, src in (extra or {}).items():
            self.write(path, dedent(src))
        # arch-check runs `cargo tree --locked`; path dependencies only, so no network
        subprocess.run(["cargo", "generate-lockfile", "--offline", "--manifest-path", os.path.join(self.dir, "Cargo.toml")],
                       check=True, capture_output=True)

    def write(self, path: str, text: str) -> None:
        full = os.path.join(self.dir, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as fh:
            fh.write(text)

    def run(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        rc = ac.main(["--root", self.dir, *args], out=out)
        return rc, out.getvalue()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


PROTOCOL = {"src/lib.rs": "pub mod messages;\n", "src/messages.rs": "pub struct Message;\n"}


def rule_line(output: str, prefix: str) -> str:
    for line in output.splitlines():
        if line[7:].startswith(prefix):
            return line
    raise AssertionError(f"no rule line starting {prefix!r} in:\n{output}")


@unittest.skipUnless(HAVE_CARGO, "cargo not on PATH")
class WorkspaceTests(unittest.TestCase):
    def setUp(self) -> None:
        os.environ.setdefault("CARGO_NET_OFFLINE", "true")
        self.trees: list[Tree] = []

    def tearDown(self) -> None:
        for t in self.trees:
            t.cleanup()

    def tree(self, *args, **kwargs) -> Tree:
        t = Tree(*args, **kwargs)
        self.trees.append(t)
        return t

    def clean_crates(self) -> dict[str, dict[str, str]]:
        return {
            "shoal-protocol": dict(PROTOCOL),
            "shoal-core": {
                "src/lib.rs": """
                    //! Root: uses its children, children use items of the root.
                    pub mod a;
                    pub mod b;
                    pub mod nested;
                    pub use a::Alpha;
                    pub struct RootThing;
                    pub fn root() { a::alpha(); b::beta(); }
                    #[cfg(test)]
                    mod tests;
                """,
                "src/a.rs": """
                    use crate::RootThing;
                    use super::b::Beta;
                    pub struct Alpha;
                    pub fn alpha() -> Option<(RootThing, Beta)> { None }
                """,
                "src/b.rs": """
                    /// Doc links are not imports: [`crate::a::Alpha`].
                    pub struct Beta;
                    pub fn beta() {
                        let s = "crate::a::alpha() { {";
                        let _ = s;
                    }
                    #[cfg(test)]
                    mod tests {
                        use crate::a::alpha;
                        #[test]
                        fn t() { alpha(); }
                    }
                """,
                "src/tests.rs": "use crate::a::alpha;\n#[test]\nfn t() { alpha(); }\n",
                "src/nested/mod.rs": """
                    mod child;
                    pub use child::Child;
                    pub struct Parent;
                """,
                "src/nested/child.rs": """
                    use super::Parent;
                    use crate::a::Alpha;
                    pub struct Child(pub Parent, pub Alpha);
                """,
            },
        }

    def run_tree(self, tree: Tree, rc: int, *args: str) -> str:
        """Runs arch-check on `tree`, checks its exit code and returns its output."""
        got, out = tree.run(*args)
        self.assertEqual(got, rc, out)
        return out

    def check(self, crates: dict[str, dict[str, str]], rc: int, *args: str, **tree_kwargs) -> tuple[Tree, str]:
        """Builds a workspace of `crates` and runs arch-check on it as `run_tree` does."""
        t = self.tree(crates, **tree_kwargs)
        return t, self.run_tree(t, rc, *args)

    def check_core(self, files: dict[str, str], rc: int, *expected: str) -> str:
        """Runs arch-check on the protocol crate and a shoal-core of `files`; the output must hold each of `expected`."""
        _, out = self.check({"shoal-protocol": dict(PROTOCOL), "shoal-core": files}, rc)
        for text in expected:
            self.assertIn(text, out)
        return out

    def test_clean_tree_passes(self):
        _, out = self.check(self.clean_crates(), 0, deps={"shoal-core": ["shoal-protocol"]})
        summary = out.strip().splitlines()[-1]
        self.assertRegex(summary, r"^arch-check: 2 crates, 0 crate cycles; \d+ modules, 0 module cycles; protocol deps ok; "
                                  r"files <= 600: ok \(largest: .*\); fns <= 100: ok \(longest: .*\)$")
        for prefix in ("crate cycles", "module cycles", "protocol deps", "files <= 600", "fns <= 100"):
            self.assertTrue(rule_line(out, prefix).startswith("[ok  ]"), out)

    def test_module_cycle_through_use_crate(self):
        crates = self.clean_crates()
        crates["shoal-core"]["src/b.rs"] = "use crate::a::Alpha;\npub struct Beta(pub Option<Alpha>);\n"
        _, out = self.check(crates, 1)
        self.assertTrue(rule_line(out, "module cycles").startswith("[FAIL] module cycles: 1 "), out)
        self.assertIn("shoal-core: a -> b -> a", out)
        self.assertIn("a -> b: shoal-core/src/a.rs:2 `super::b::Beta`", out)
        self.assertIn("b -> a: shoal-core/src/b.rs:1 `crate::a::Alpha`", out)
        self.assertIn("1 module cycles", out.splitlines()[-1])

    def test_module_cycle_through_super_paths_in_code(self):
        self.check_core(
            {
                "src/lib.rs": "mod x;\nmod y;\nmod z;\n",
                "src/x.rs": "pub fn x() -> u32 {\n    super::y::y()\n}\n",
                "src/y.rs": "pub fn y() -> u32 {\n    1\n}\npub fn yz() -> u32 { super::z::Z }\n",
                "src/z.rs": "use super::{x::{self as xx}};\npub const Z: u32 = 3;\npub fn z() -> u32 { xx::x() }\n",
            },
            1,
            "shoal-core: x -> y -> z -> x",
            "x -> y: shoal-core/src/x.rs:2 `super::y::y`",
            "z -> x: shoal-core/src/z.rs:1 `super::x::self`",
        )

    def test_cycle_through_root_reexport_and_nested_super(self):
        self.check_core(
            {
                "src/lib.rs": "pub mod outer;\npub mod other;\npub use other::Other;\n",
                "src/outer/mod.rs": "pub mod inner;\n",
                # super::super from outer::inner is the crate root; Other is re-exported there from `other`.
                "src/outer/inner.rs": "pub fn f() -> Option<super::super::Other> { None }\n",
                "src/other.rs": "pub struct Other;\npub fn g() { crate::outer::inner::f(); }\n",
            },
            1,
            "shoal-core: other -> outer -> other",
            "outer -> other: shoal-core/src/outer/inner.rs:1 `super::super::Other`",
        )

    def test_parent_child_and_test_code_are_not_cycles(self):
        _, out = self.check(self.clean_crates(), 0)
        self.assertTrue(rule_line(out, "module cycles").startswith("[ok  ] module cycles: none"), out)

    def test_nested_cycle_is_info_only(self):
        self.check_core(
            {
                "src/lib.rs": "pub mod feed;\n",
                "src/feed/mod.rs": "pub mod p;\npub mod q;\n",
                "src/feed/p.rs": "pub fn p() { super::q::q() }\n",
                "src/feed/q.rs": "pub fn q() { crate::feed::p::p() }\n",
            },
            0,
            "[info] nested module cycles",
            "shoal-core: feed::p -> feed::q -> feed::p",
        )

    def test_over_long_fn(self):
        crates = self.clean_crates()
        crates["shoal-core"]["src/b.rs"] = (
            "pub struct Beta;\n"
            "pub fn short() {\n" + filler(10) + "}\n"
            "pub fn long_one() {\n" + filler(120) + "}\n"
            "impl Beta {\n    pub fn longer(&self) {\n" + filler(130, "        ") + "    }\n}\n"
            "#[test]\nfn long_test() {\n" + filler(200) + "}\n"
            "#[cfg(test)]\nfn long_test_helper() {\n" + filler(200) + "}\n"
            "#[cfg(test)]\nmod tests {\n    fn long_in_tests() {\n" + filler(200, "        ") + "    }\n}\n"
        )
        t, out = self.check(crates, 1)
        line = rule_line(out, "fns <= 100")
        self.assertTrue(line.startswith("[FAIL] fns <= 100 lines: 2 of "), out)
        body = out.splitlines()
        i = body.index(line)
        # longest first, with file:line and length
        self.assertEqual(body[i + 1].strip(), "shoal-core/src/b.rs:137 fn longer: 132 lines")
        self.assertEqual(body[i + 2].strip(), "shoal-core/src/b.rs:14 fn long_one: 122 lines")
        self.assertNotIn("long_test", out)
        self.assertNotIn("long_in_tests", out)
        self.assertIn("(longest: shoal-core/src/b.rs:fn longer 132)", body[-1])
        rc, out = t.run("--max-fn-lines", "140")
        self.assertTrue(rule_line(out, "fns <= 140").startswith("[ok  ]"), out)

    def test_long_file_with_big_test_module_is_not_counted(self):
        crates = self.clean_crates()
        code = "pub struct Beta;\n" + "".join(f"pub const C{k}: u32 = {k};\n" for k in range(500))
        tests = "#[cfg(test)]\nmod tests {\n" + "".join(f"    #[test]\n    fn t{k}() {{}}\n" for k in range(400)) + "}\n"
        crates["shoal-core"]["src/b.rs"] = code + "\n" + tests + "\n"
        _, out = self.check(crates, 0)
        self.assertIn("(largest: shoal-core/src/b.rs 502)", out.splitlines()[-1])
        # the same code without the #[cfg(test)] is counted in full
        crates["shoal-core"]["src/b.rs"] = code + "\n" + tests.replace("#[cfg(test)]\n", "")
        _, out = self.check(crates, 1)
        self.assertIn("shoal-core/src/b.rs: 1304 lines", out)
        # a file over the limit before its test module is reported with both sizes
        big = "pub struct Beta;\n" + "".join(f"pub const C{k}: u32 = {k};\n" for k in range(700))
        crates["shoal-core"]["src/b.rs"] = big + tests
        t3, out = self.check(crates, 1)
        self.assertIn("shoal-core/src/b.rs: 701 lines (1504 with tests)", out)
        self.run_tree(t3, 0, "--max-file-lines", "800")

    def test_test_only_files_are_exempt(self):
        crates = self.clean_crates()
        long_fn = "fn helper() {\n" + filler(150) + "}\n"
        crates["shoal-core"]["src/tests.rs"] = long_fn + "".join(f"// {k}\n" for k in range(700))
        crates["shoal-core"]["tests/it.rs"] = long_fn + "".join(f"// {k}\n" for k in range(700))
        crates["shoal-core"]["benches/b.rs"] = long_fn
        self.check(crates, 0)

    def test_braces_in_strings_chars_and_comments(self):
        src = dedent(r'''
            pub fn tricky<'a>(x: &'a str) -> usize {
                let open = "{{{ not a block";
                let close = '}';
                let esc = '\'';
                let quote = "\"}\"";
                let raw = r#"}}} "quoted" }"#;
                let bytes = b"}";
                let byte = b'{';
                // } a closing brace in a comment
                /* { nested /* } */ comment } */
                let label: usize = 'outer: loop { break 'outer 1; };
                open.len() + close.len_utf8() + raw.len() + bytes.len() + byte as usize + quote.len() + esc.len_utf8() + x.len() + label
            }
            pub fn after() -> &'static str {
                "}"
            }
        ''')
        scan = ac.scan_file(src)
        fns = {f.name: (f.start, f.end) for f in scan.fns}
        self.assertEqual(fns, {"tricky": (1, 13), "after": (14, 16)})
        # and through the whole script: a 101-line fn full of braces in strings is found with its exact length
        body = "".join(f'    let _s{k} = "}}{{}}"; // }}\n' for k in range(99))
        crates = self.clean_crates()
        crates["shoal-core"]["src/b.rs"] = "pub fn braces() {\n" + body + "}\npub fn ok() {}\n"
        t, out = self.check(crates, 1)
        self.assertIn("shoal-core/src/b.rs:1 fn braces: 101 lines", out)
        self.run_tree(t, 0, "--max-fn-lines", "101")

    def test_protocol_runtime_dependency(self):
        crates = self.clean_crates()
        crates["shoal-protocol"] = dict(PROTOCOL)
        crates["shoal-wire"] = {"src/lib.rs": "pub fn w() {}\n"}
        # a local crate named like the runtime stands in for it (no network needed)
        crates["tokio"] = {"src/lib.rs": "pub fn spawn() {}\n"}
        _, out = self.check(crates, 1, deps={"shoal-protocol": ["shoal-wire"], "shoal-wire": ["tokio"]})
        line = rule_line(out, "protocol deps")
        self.assertTrue(line.startswith("[FAIL] protocol deps: shoal-protocol pulls in 1 runtime crate"), out)
        self.assertIn("tokio v0.1.0 via shoal-protocol -> shoal-wire -> tokio", out)
        self.assertIn("protocol deps FAIL", out.splitlines()[-1])
        # a dev-dependency on the runtime is fine
        self.check(crates, 0, deps={"shoal-wire": ["tokio"]}, dev_deps={"shoal-protocol": ["tokio"]})

    def test_dev_dependency_cycle_is_info(self):
        crates = self.clean_crates()
        crates["shoal-util"] = {"src/lib.rs": "pub fn u() {}\n"}
        _, out = self.check(crates, 0, "--report", deps={"shoal-util": ["shoal-core"]}, dev_deps={"shoal-core": ["shoal-util"]})
        self.assertIn("[info] dev-dependency cycles: 1", out)
        self.assertIn("shoal-core -> shoal-util (dev), shoal-util -> shoal-core", out)
        # --report: dependencies first, one line per crate
        self.assertIn("  shoal-core -> (none)\n", out)
        self.assertIn("  shoal-util -> shoal-core\n", out)
        self.assertLess(out.index("  shoal-core ->"), out.index("  shoal-util ->"))


class UnitTests(unittest.TestCase):
    def test_tarjan(self):
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"f"}, "g": set()}
        self.assertEqual(ac.tarjan_scc("abcdefg", edges), [["a", "b", "c"], ["d", "e"], ["f"]])
        self.assertEqual(ac.shortest_cycle(["a", "b", "c"], edges), ["a", "b", "c", "a"])

    def test_normal_crate_cycle_fails(self):
        ws = ac.Workspace("/x", {"p": "/x/p", "q": "/x/q", "r": "/x/r"}, {"p": {"q"}, "q": {"p"}, "r": set()},
                          {"p": set(), "q": set(), "r": {"p"}}, [], set())
        res, info, n = ac.check_crate_cycles(ws)
        self.assertFalse(res.ok)
        self.assertEqual(n, 1)
        self.assertEqual(res.details, ["cycle: p -> q -> p"])

    def test_protocol_verdict(self):
        tree = "0shoal-protocol v0.1.0 (/w/p)\n1serde v1.0.0\n2serde_derive v1.0.0 (proc-macro)\n1opentelemetry_sdk v0.31.0\n2hyper v1.0.0\n"
        res = ac.protocol_verdict("shoal-protocol", tree)
        self.assertFalse(res.ok)
        self.assertEqual(res.details, ["hyper v1.0.0 via shoal-protocol -> opentelemetry_sdk -> hyper",
                                       "opentelemetry_sdk v0.31.0 via shoal-protocol -> opentelemetry_sdk"])
        self.assertTrue(ac.protocol_verdict("shoal-protocol", "0shoal-protocol v0.1.0\n1serde v1.0.0\n1tokio-like v1\n").ok)

    def test_resolve(self):
        mods = {(), ("a",), ("a", "b"), ("c",)}
        self.assertEqual(ac.resolve(("a", "b"), ("super", "super", "c", "X"), mods), ("c",))
        self.assertEqual(ac.resolve(("a",), ("self", "b", "f"), mods), ("a", "b"))
        self.assertEqual(ac.resolve(("c",), ("crate", "a", "b", "Thing"), mods), ("a", "b"))
        self.assertIsNone(ac.resolve((), ("super", "x"), mods))
        aliases = {((), "Thing"): ((), ("self", "a", "b", "Thing"))}
        self.assertEqual(ac.resolve(("c",), ("crate", "Thing"), mods, aliases), ("a", "b"))

    def test_use_tree_and_cfg_test_items(self):
        src = dedent("""
            use crate::{a::{self, X}, b::Y as Z, c::*};
            #[cfg(test)]
            use crate::d::T;
            #[cfg(not(test))]
            use crate::e::U;
            pub(crate) fn f() { $crate::g::h(); self::i::j(); }
        """)
        scan = ac.scan_file(src, ("m",))
        self.assertEqual([r.segments for r in scan.refs], [
            ("crate", "a", "self"), ("crate", "a", "X"), ("crate", "b", "Y"), ("crate", "c"),
            ("crate", "e", "U"), ("crate", "g", "h"), ("self", "i", "j"),
        ])
        self.assertEqual({u.bound for u in scan.uses}, {"a", "X", "Z", "U"})

    def test_effective_lines_trailing_test_module(self):
        src = "fn a() {}\n\n#[allow(unused)]\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n\n"
        scan = ac.scan_file(src)
        self.assertEqual(ac.effective_lines(src, scan), (2, 8))


if __name__ == "__main__":
    unittest.main()

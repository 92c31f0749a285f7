#!/usr/bin/env python3
"""Tests of scripts/docs-check.py: each check passes on matching docs and
fails, with a precise message, on each kind of drift.

Run: python3 scripts/docs-check.py --self-test
  or python3 -m unittest discover -s scripts -p 'test_docs_check.py'

The binaries are stand-ins written here: small Python scripts that behave
like `shoal-orchestrator`/`shoal-worker --print-config` (including serde's
"unknown field" message for structs and the acceptance of any key by open
maps) and like `shoal-sim --help`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import textwrap
import unittest
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("docs_check", HERE / "docs-check.py")
dc = importlib.util.module_from_spec(_spec)
sys.modules["docs_check"] = dc
_spec.loader.exec_module(dc)

# What the stand-in orchestrator prints, which sections are open maps, and
# a field its struct accepts without printing it (an Option skipped when
# None).
ORCHESTRATOR = {
    "config": {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "linger_ms": 5, "options": {}},
        "feed": {"symbols": ["*"], "url": "ws://127.0.0.1:9001", "headers": {}},
        "rules": {"level_step": "1.00", "events": {"card_transaction": "score_transaction"}},
        "observability": {"sample_ratio": 1.0, "otlp_enabled": False, "service_name": ""},
    },
    "maps": ["kafka.options", "feed.headers", "rules.events"],
    "hidden": {"feed": ["proxy"]},
}
WORKER = {
    "config": {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "linger_ms": 5, "options": {}},
        "observability": {"sample_ratio": 1.0, "otlp_enabled": False, "service_name": ""},
        "worker": {"id": "worker-123", "max_attempts": 5},
    },
    "maps": ["kafka.options"],
    "hidden": {},
}

FAKE_CONFIG_BINARY = r'''
import json, os, sys
SPEC = json.loads(__SPEC__)
def at(path):
    node = SPEC["config"]
    for part in path:
        node = node[part]
    return node
probes = [k for k in os.environ if k.startswith("SHOAL__") and k.endswith("__DOCS_CHECK_PROBE")]
if "--print-config" not in sys.argv:
    sys.exit(64)
if probes:
    path = [p.lower() for p in probes[0][len("SHOAL__"):].split("__")[:-1]]
    dotted = ".".join(path)
    if dotted not in SPEC["maps"]:
        fields = sorted(list(at(path)) + SPEC["hidden"].get(dotted, []))
        listed = ", ".join("`%s`" % f for f in fields)
        sys.stderr.write("shoal-x: cannot load configuration: unknown field `docs_check_probe`, "
                         "expected one of %s for key `%s`\n" % (listed, dotted))
        sys.exit(2)
print(json.dumps(SPEC["config"], indent=2))
'''

SIM_HELP = """\
Shoal's bundled market simulator.

Also: --rate in prose before the options is not a flag.

Usage: shoal-sim [OPTIONS]

Options:
      --listen <LISTEN>
          Address to listen on

          [env: SHOAL_SIM_LISTEN=]
          [default: 127.0.0.1:9001]

      --rate <RATE>
          Trades per second per symbol

          [env: SHOAL_SIM_RATE=]
          [default: 5]

      --malformed-every <N>
          Fault

          [env: SHOAL_SIM_MALFORMED_EVERY=]

  -h, --help
          Print help (see a summary with '-h')

  -V, --version
          Print version
"""

CONFIGURATION_MD = """\
# Configuration

| key | default | meaning |
|---|---|---|
| `kafka.bootstrap_servers` | `127.0.0.1:9092` | brokers |
| `kafka.linger_ms` | `5` | linger |
| `kafka.options.<name>` | none | raw options |
| `feed.symbols` | `*` | symbols |
| `feed.url` | `ws://127.0.0.1:9001` | url |
| `feed.headers.<name>` | none | headers |
| `feed.proxy` | none | a field the binary does not print |
| `rules.level_step` | `1.00` | step |
| `rules.events.<event_type>` | `card_transaction` → `score_transaction` | mapping |
| `observability.sample_ratio` | `1.0` | ratio |
| `observability.otlp_enabled` | `false` | export |
| `observability.service_name` | empty | name |
| `worker.id` | `$HOSTNAME`, else `worker-<pid>` | identity |
| `worker.max_attempts` | `5` | attempts |

Other tables are ignored:

| option | meaning |
|---|---|
| `--print-config` | prints |

## Simulator

| flag | env | default | meaning |
|---|---|---|---|
| `--listen` | `SHOAL_SIM_LISTEN` | `127.0.0.1:9001` | address |
| `--rate` | `SHOAL_SIM_RATE` | `5` | rate |
| `--malformed-every` | `SHOAL_SIM_MALFORMED_EVERY` | off | fault |
"""

README_MD = """\
# Project

See [configuration](docs/configuration.md), [the metrics](docs/other.md#metrics-get-metrics),
[twice](docs/other.md#metrics-get-metrics-1), ![a picture](docs/pic.png),
[a directory](docs), [external](https://example.invalid/x) and [top](#project).

```text
[in a code block](docs/absent.md)
```

And `[in a code span](docs/absent.md)`.

[ref]: docs/other.md#an-anchor
"""

OTHER_MD = """\
# Other

## Metrics (`GET /metrics`)

## Metrics (`GET /metrics`)

<a id="an-anchor"></a>

Back to the [README](../README.md#project).
"""


class Fixture:
    """A repository with docs and stand-in binaries in a temporary directory."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="docs-check-test-")
        self.root = Path(self.tmp.name)
        (self.root / "docs").mkdir()
        self.write("README.md", README_MD)
        self.write("docs/configuration.md", CONFIGURATION_MD)
        self.write("docs/other.md", OTHER_MD)
        self.write("docs/pic.png", "png")
        self.orchestrator = self.config_binary("orchestrator", ORCHESTRATOR)
        self.worker = self.config_binary("worker", WORKER)
        self.sim = self.script("sim", f"import sys\nprint({SIM_HELP!r})\n")

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    def script(self, name: str, body: str) -> Path:
        path = self.root / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
        path.chmod(0o755)
        return path

    def config_binary(self, name: str, spec: dict) -> Path:
        body = FAKE_CONFIG_BINARY.replace("__SPEC__", repr(json.dumps(spec)))
        return self.script(name, textwrap.dedent(body))

    def run(self) -> tuple[list[str], str]:
        return dc.run_checks(self.root, self.orchestrator, self.worker, self.sim)

    def main(self, *extra: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = [
            "--root", str(self.root),
            "--orchestrator", str(self.orchestrator),
            "--worker", str(self.worker),
            "--sim", str(self.sim),
            *extra,
        ]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = dc.main(args)
        return code, out.getvalue(), err.getvalue()

    def close(self) -> None:
        self.tmp.cleanup()


# Docs that drift from the code, one test each (test_<name>): the file, the
# text replaced in it and its replacement, then each problem the checks must
# report, given as fragments of one message.
DRIFTS: dict[str, tuple[str, str, str, tuple[str, ...], ...]] = {
    # -- configuration keys --------------------------------------------------
    "a_documented_key_must_exist": (
        "docs/configuration.md",
        "`kafka.linger_ms`",
        "`kafka.linger_msec`",
        ("docs/configuration.md:6", "`kafka.linger_msec` is documented but neither binary accepts it"),
    ),
    "a_key_accepted_but_not_printed_must_be_documented": (
        "docs/configuration.md",
        "| `feed.proxy` | none | a field the binary does not print |\n",
        "",
        ("`feed.proxy` is accepted by the code but not documented",),
    ),
    "an_open_map_is_one_key_and_its_entries_are_not_keys": (
        "docs/configuration.md",
        "`rules.events.<event_type>`",
        "`rules.events.card_transaction`",
        ("`rules.events.card_transaction` is documented but neither binary accepts it",),
        ("`rules.events.<name>` is accepted by the code but not documented",),
    ),
    "a_wrong_default_is_reported": (
        "docs/configuration.md",
        "| `kafka.linger_ms` | `5` |",
        "| `kafka.linger_ms` | `10` |",
        ("docs/configuration.md:6", "`kafka.linger_ms`: documented default `10`, the code's is `5`"),
    ),
    "a_key_documented_twice_is_reported": (
        "docs/configuration.md",
        "| `kafka.linger_ms` | `5` | linger |\n",
        "| `kafka.linger_ms` | `5` | linger |\n| `kafka.linger_ms` | `5` | again |\n",
        ("`kafka.linger_ms` is documented twice",),
    ),
    "a_key_row_must_name_one_key": (
        "docs/configuration.md",
        "| `kafka.linger_ms` |",
        "| `kafka.linger_ms` / `x` |",
        ("the first cell of a `key` table must be one code span",),
    ),
    "keys_of_either_binary_count": (
        "docs/configuration.md",
        "| `worker.max_attempts` | `5` | attempts |\n",
        "",
        ("`worker.max_attempts` is accepted by the code but not documented",),
    ),
    # -- simulator flags -----------------------------------------------------
    "simulator_flags_must_match_the_help": (
        "docs/configuration.md",
        "| `--rate` | `SHOAL_SIM_RATE` | `5` | rate |\n",
        "",
        ("`--rate` (shoal-sim) is not documented",),
    ),
    "a_documented_flag_must_exist": (
        "docs/configuration.md",
        "`--rate`",
        "`--speed`",
        ("`--speed` is documented but shoal-sim has no such flag",),
    ),
    "flag_defaults_and_env_names_are_compared": (
        "docs/configuration.md",
        "| `--rate` | `SHOAL_SIM_RATE` | `5` |",
        "| `--rate` | `SIM_RATE` | `50` |",
        ("`--rate`: documented default `50`, the code's is `5`",),
        ("`--rate`: env documented as `SIM_RATE`, the code reads `SHOAL_SIM_RATE`",),
    ),
    # -- links ---------------------------------------------------------------
    "a_link_to_a_missing_file_is_reported": (
        "README.md",
        "(docs/configuration.md)",
        "(docs/configuraton.md)",
        ("README.md:3", "link `docs/configuraton.md`", "does not exist"),
    ),
    "a_link_to_a_missing_anchor_is_reported": (
        "README.md",
        "#metrics-get-metrics-1",
        "#metrics-get-metrics-2",
        ("README.md:4", "no heading with anchor #metrics-get-metrics-2 in docs/other.md"),
    ),
    "a_link_outside_the_repository_is_reported": (
        "README.md",
        "(docs/pic.png)",
        "(../../etc/passwd)",
        ("points outside the repository",),
    ),
}


class DocsCheckTest(unittest.TestCase):
    def setUp(self) -> None:
        self.fx = Fixture()

    def tearDown(self) -> None:
        self.fx.close()

    def assert_problem(self, *fragments: str) -> None:
        problems, _ = self.fx.run()
        self.assertTrue(
            any(all(f in p for f in fragments) for p in problems),
            f"no problem mentioning {fragments}; problems: {problems}",
        )

    def assert_drift_reported(self, relative: str, old: str, new: str, *problems: tuple[str, ...]) -> None:
        """Edits the fixture as one of DRIFTS says, then looks for each of its problems."""
        self.fx.edit(relative, old, new)
        for fragments in problems:
            self.assert_problem(*fragments)

    # -- passing -------------------------------------------------------------

    def test_matching_docs_pass_with_a_one_line_summary(self) -> None:
        code, out, err = self.fx.main()
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out.strip(),
            "docs-check: 14 config keys documented (9 defaults checked), "
            "3 simulator flags (2 defaults checked), 8 links ok",
        )

    # -- configuration keys (and DRIFTS) -------------------------------------

    def test_a_key_the_code_accepts_must_be_documented(self) -> None:
        self.fx.edit("docs/configuration.md", "| `kafka.linger_ms` | `5` | linger |\n", "")
        self.assert_problem("docs/configuration.md", "`kafka.linger_ms` is accepted by the code but not documented")
        code, _, err = self.fx.main()
        self.assertEqual(code, 1)
        self.assertIn("FAILED, 1 problem(s)", err)

    def test_defaults_of_every_type_are_compared(self) -> None:
        cases = [
            ("| `observability.otlp_enabled` | `false` |", "| `observability.otlp_enabled` | `true` |"),
            ("| `observability.sample_ratio` | `1.0` |", "| `observability.sample_ratio` | `0.5` |"),
            ("| `feed.symbols` | `*` |", "| `feed.symbols` | `BTC` |"),
            ("| `observability.service_name` | empty |", "| `observability.service_name` | `shoal` |"),
            ("| `rules.level_step` | `1.00` |", "| `rules.level_step` | empty |"),
        ]
        for old, new in cases:
            with self.subTest(new=new):
                self.fx.edit("docs/configuration.md", old, new)
                problems, _ = self.fx.run()
                self.assertEqual(len(problems), 1, problems)
                self.assertIn("documented default", problems[0])
                self.fx.edit("docs/configuration.md", new, old)

    def test_prose_defaults_are_not_compared(self) -> None:
        problems, _ = self.fx.run()
        self.assertEqual(problems, [])  # worker.id's default is prose: not compared

    # -- simulator flags (and DRIFTS) ----------------------------------------

    def test_help_is_parsed_from_the_options_section_only(self) -> None:
        flags = dc.parse_help(SIM_HELP)
        self.assertEqual(sorted(flags), ["listen", "malformed-every", "rate"])
        self.assertEqual(flags["listen"], {"default": "127.0.0.1:9001", "env": "SHOAL_SIM_LISTEN"})
        self.assertEqual(flags["malformed-every"], {"default": None, "env": "SHOAL_SIM_MALFORMED_EVERY"})

    # -- links (and DRIFTS) --------------------------------------------------

    def test_anchors_in_the_same_file_and_reference_definitions_are_checked(self) -> None:
        self.fx.edit("README.md", "[top](#project)", "[top](#projects)")
        self.fx.edit("README.md", "[ref]: docs/other.md#an-anchor", "[ref]: docs/other.md#no-anchor")
        self.assert_problem("README.md:5", "#projects")
        self.assert_problem("README.md:13", "#no-anchor")

    def test_links_in_docs_and_the_chart_readme_are_checked(self) -> None:
        self.fx.edit("docs/other.md", "(../README.md#project)", "(../READ.md)")
        self.assert_problem("docs/other.md:9", "READ.md")
        self.fx.write("deploy/helm/shoal/README.md", "[values](values.yaml)\n")
        self.assert_problem("deploy/helm/shoal/README.md:1", "values.yaml")

    def test_github_slugs(self) -> None:
        self.assertEqual(dc.github_slug("Metrics (`GET /metrics`)"), "metrics-get-metrics")
        self.assertEqual(
            dc.github_slug("Delivery: exactly-once (default) or at-least-once"),
            "delivery-exactly-once-default-or-at-least-once",
        )
        self.assertEqual(dc.github_slug("Simulator (`shoal-sim`)"), "simulator-shoal-sim")
        self.assertEqual(dc.github_slug("At-least-once (`at_least_once`)"), "at-least-once-at_least_once")
        self.assertEqual(dc.github_slug("Seeing a decision's trace"), "seeing-a-decisions-trace")
        self.assertEqual(dc.github_slug("[Linked](x.md) **bold**"), "linked-bold")

    # -- binaries ------------------------------------------------------------

    def test_missing_binaries_exit_2_with_a_hint(self) -> None:
        self.fx.orchestrator = self.fx.root / "bin" / "absent"
        code, out, err = self.fx.main()
        self.assertEqual(code, 2)
        self.assertIn("build the binaries first", err)
        self.assertEqual(out, "")

    def test_a_binary_that_answers_a_probe_oddly_is_reported(self) -> None:
        self.fx.orchestrator = self.fx.script(
            "odd",
            "import os, sys\n"
            "if any(k.endswith('__DOCS_CHECK_PROBE') for k in os.environ):\n"
            "    sys.stderr.write('something else went wrong\\n'); sys.exit(2)\n"
            "print('{\"kafka\": {\"linger_ms\": 5}}')\n",
        )
        code, _, err = self.fx.main()
        self.assertEqual(code, 2)
        self.assertIn("unexpected response", err)


def _drift_test(case: tuple) -> Callable[[DocsCheckTest], None]:
    def test(self: DocsCheckTest) -> None:
        self.assert_drift_reported(*case)

    return test


for _name, _case in DRIFTS.items():
    assert not hasattr(DocsCheckTest, f"test_{_name}"), _name
    setattr(DocsCheckTest, f"test_{_name}", _drift_test(_case))


if __name__ == "__main__":
    unittest.main()

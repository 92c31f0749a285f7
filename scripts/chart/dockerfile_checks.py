"""The Dockerfile checks: the image builds what the tests run, its runtime
stage, and the binaries the chart runs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from manifests import Failures

# The build the image must run: the tests' build (Makefile `test`:
# cargo build --workspace --bins) in release mode, with the lock file enforced.
IMAGE_BUILD = "cargo build --release --workspace --bins --locked"
TEST_BUILD = "cargo build --workspace --bins"
RUNTIME_BASE = "debian:bookworm-slim"
BUILD_PACKAGES = {"cmake", "g++", "libcurl4-openssl-dev", "libsasl2-dev", "libssl-dev", "pkg-config", "zlib1g-dev"}
RUNTIME_PACKAGES = {"ca-certificates", "libcurl4", "libsasl2-2", "libssl3"}


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def shell_commands(run_args: str) -> list[str]:
    """The commands of a RUN instruction: --mount options dropped, split on && and ;."""
    args = re.sub(r"--mount=\S+\s*", "", run_args)
    return [" ".join(c.split()) for c in re.split(r"&&|;|\|\|", args) if c.strip()]


def run_commands(instructions: list[tuple[str, str]]) -> list[str]:
    """The commands of every RUN instruction, in order."""
    return [c for word, args in instructions if word == "RUN" for c in shell_commands(args)]


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    packages: set[str] = set()
    for command in run_commands(stage):
        if command.startswith("apt-get install"):
            packages |= {w for w in command.split()[2:] if not w.startswith("-")}
    return packages


def cmd_dockerfile_build(dockerfile: str, makefile: str) -> int:
    f = Failures()
    builds = [c for c in run_commands(dockerfile_instructions(dockerfile)) if "cargo build" in c]
    f.check(len(builds) == 1, f"expected exactly one cargo build in {dockerfile}, found {builds}")
    if builds:
        f.check(builds[0] == IMAGE_BUILD, f"{dockerfile} runs `{builds[0]}`, expected `{IMAGE_BUILD}`")
        print(f"note: {dockerfile}: {builds[0]}")
    make = Path(makefile).read_text()
    # The recipe of `make test`: the build whose binaries the tests run.
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", make, re.M)
    recipe_builds = [" ".join(line.split()) for line in (test_recipe.group(1) if test_recipe else "").splitlines() if "cargo build" in line]
    f.check(TEST_BUILD in recipe_builds, f"`make test` no longer runs `{TEST_BUILD}` (found {recipe_builds}); update IMAGE_BUILD/TEST_BUILD here and the Dockerfile together")
    if builds:
        selection = builds[0].replace(" --release", "").replace(" --locked", "")
        f.check(selection == TEST_BUILD, f"the image's build selects `{selection}`, the tests' build `{TEST_BUILD}`")
        print(f"note: {makefile} test: {TEST_BUILD} (same packages and targets, debug profile)")
    f.check(
        "cargo build --release --workspace --bins" in " ".join(make.split()),
        f"{makefile} has no release build `cargo build --release --workspace --bins` (make bench)",
    )
    return f.finish()


def cmd_dockerfile_runtime(dockerfile: str) -> int:
    f = Failures()
    all_stages = stages(dockerfile_instructions(dockerfile))
    if not f.check(len(all_stages) >= 2, "expected a multi-stage Dockerfile (build, runtime)"):
        return f.finish()
    build, runtime = all_stages[0], all_stages[-1]
    build_from = build[0][1].split()
    f.check(re.fullmatch(r"rust:[0-9.]+-bookworm", build_from[0]) is not None, f"build stage FROM {build_from[0]}: expected the official rust image, a pinned version on bookworm")
    missing = BUILD_PACKAGES - apt_packages(build)
    f.check(not missing, f"build stage does not install {sorted(missing)}")
    f.check(runtime[0][1].split()[0] == RUNTIME_BASE, f"runtime stage FROM {runtime[0][1]}: expected {RUNTIME_BASE}")
    missing = RUNTIME_PACKAGES - apt_packages(runtime)
    f.check(not missing, f"runtime stage does not install {sorted(missing)}")
    users = [args for word, args in runtime if word == "USER"]
    if f.check(bool(users), "runtime stage sets no USER: the container would run as root"):
        user = users[-1].split(":")[0]
        f.check(user.isdigit() and int(user) != 0, f"runtime USER {users[-1]}: expected a numeric non-root uid (Kubernetes' runAsNonRoot needs a number)")
        f.check(user == "10001", f"runtime USER {users[-1]}: the chart's podSecurityContext runs as 10001")
        print(f"note: runtime stage FROM {runtime[0][1]}, USER {users[-1]}")
    for word in ("ENTRYPOINT", "CMD"):
        for args in (a for w, a in runtime if w == word):
            f.check(args.startswith("["), f"{word} {args}: use the exec (JSON) form, not a shell")
            if args.startswith("["):
                f.check(json.loads(args)[0] not in ("sh", "/bin/sh", "bash", "/bin/bash"), f"{word} {args}: no shell entrypoint")
    return f.finish()


def workspace_binaries(root: Path) -> dict[str, str]:
    """Binary target name -> package, as cargo discovers them for the workspace members."""
    workspace = tomllib.loads((root / "Cargo.toml").read_text())
    result: dict[str, str] = {}
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        package = manifest["package"]["name"]
        for target in manifest.get("bin", []):
            result[target["name"]] = package
        if manifest["package"].get("autobins", True):
            if (root / member / "src/main.rs").exists() and not any(b.get("path") == "src/main.rs" for b in manifest.get("bin", [])):
                result[package] = package
            for path in sorted((root / member / "src/bin").glob("*.rs")):
                if not any(b.get("path") == f"src/bin/{path.name}" for b in manifest.get("bin", [])):
                    result[path.stem] = package
    return result


def cmd_binaries(dockerfile: str, chart: str) -> int:
    f = Failures()
    workspace = workspace_binaries(Path("."))
    copied = set()
    for command in run_commands(dockerfile_instructions(dockerfile)):
        if command.startswith("cp "):
            copied |= {Path(p).name for p in command.split()[1:-1] if p.startswith("target/release/")}
    chart_bins = set()
    for template in Path(chart, "templates").glob("*.yaml"):
        chart_bins |= set(re.findall(r"^\s*-\s*(shoal-[a-z-]+)\s*$", template.read_text(), re.M))
    f.check(bool(chart_bins), "found no binary in the chart's container commands")
    for name in sorted(chart_bins | copied):
        f.check(name in workspace, f"{name} is not a binary of the workspace (binaries: {sorted(workspace)})")
    f.check(chart_bins <= copied, f"the chart runs {sorted(chart_bins - copied)}, which the image does not contain")
    print(f"note: chart runs {sorted(chart_bins)}; image has {sorted(copied)}; all [[bin]] targets of " + ", ".join(sorted({workspace[b] for b in copied if b in workspace})))
    return f.finish()

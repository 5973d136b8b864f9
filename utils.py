"""Small helpers every script shares: atomic writes, progress reporting, help formatting.

Standard library (and tqdm) only, so the torch-free inference path can use it too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

log = logging.getLogger("deepspeech")

# What torch.load raises for a truncated, corrupt or foreign file (besides pickle's own errors).
FILE_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    UnicodeDecodeError,
    zipfile.BadZipFile,
)


# ---------------------------------------------------------------------------- atomic writes


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every OS lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a hidden temporary file beside ``path``; on success it is flushed, fsynced and
    renamed over ``path`` (and the folder fsynced), on any error it is removed. A reader
    sees the old file or the new one, never a part of one. Parent folders are created.

    ``mode`` is ``"w"`` (text; ``encoding`` defaults to UTF-8) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w", newline="") as f:
        f.write(text)
    return Path(path)


# ---------------------------------------------------------------------------- progress


def interactive() -> bool:
    """True when stderr is a terminal (progress bars make sense there, not in a log file)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, CI) a plain line every ``interval``
    seconds and one at the end, through :mod:`logging`. ``disable`` silences both.

    Use like tqdm: iterate over it, or call :meth:`update`; :meth:`set_postfix` sets the
    key=value pairs shown with the count.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        initial: int = 0,
        interval: float = 30.0,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.disable, self.interval = desc, unit, disable, interval
        self.n = initial
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._last = time.monotonic()
        if not disable and interactive():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()

    def set_postfix(self, **kv: Any) -> None:
        self.postfix = kv
        if self._bar is not None:
            self._bar.set_postfix(**kv)

    def _line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {count} {self.unit}" + (f"  {extra}" if extra else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self.disable and time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            log.info("%s", self._line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------------- configs


def dataclass_from_dict(cls: type, d: dict) -> Any:
    """``cls(**d)`` for a saved config; unknown keys are an error (missing ones take the defaults)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
    return cls(**d)


# ---------------------------------------------------------------------------- argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and examples, and appends ``(default: X)`` to
    a flag's help once, only when the default says something (not None, False or a
    default the help already names)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or action.option_strings == []
            or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def make_parser(doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
    """An ArgumentParser with :class:`HelpFormatter` and ``doc`` as its description."""
    return argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter, **kwargs)


def flag(name: str) -> str:
    """``"lm_path"`` -> ``"--lm-path"``."""
    return "--" + name.replace("_", "-")

"""Small helpers shared by every qnet module: logging, atomic writes, lazy k2, argparse types."""

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

# A file or folder name argument; every qnet module imports this one.
PathLike = Union[str, Path]


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set and reset."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class MissingDependencyError(ImportError):
    """Raised when an optional dependency (k2, kenlm binaries, ...) is needed but absent."""


def import_k2():
    """Import k2 lazily; raise a clear error when it is not installed (e.g. torch 2.x GPU boxes)."""
    try:
        import k2  # noqa: F401
    except Exception as exc:  # ImportError, or k2 built against another torch (RuntimeError)
        import torch

        raise MissingDependencyError(
            f"this operation needs k2, which could not be imported ({exc}). "
            f"qnet pins k2==1.23.4, built for Python 3.9 + torch 1.13.1 (you have torch "
            f"{torch.__version__}); run tools/setup.sh and `. path.sh`, or use a k2-free "
            f"option (e.g. --ctc-backend torch, --method greedy)."
        ) from exc
    return k2


def setup_logger(log_file: Optional[PathLike] = None, rank: int = 0, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to `log_file` (rank > 0 logs only warnings to stderr)."""
    fmt = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt, handlers=handlers, force=True)


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `path` to write into; on success it gets the umask mode and is
    renamed to `path`, on any error it is removed (so a killed job never leaves half a file). Writers
    that choose the format from the name (lhotse's to_file) need a `suffix` like ".tmp.jsonl.gz"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp made the file 0600: give it the mode an ordinary open() would have given it
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """torch.save `obj` to `path` atomically (temporary file + rename), so a kill never leaves half a file."""
    import torch

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def str2bool(value: str) -> bool:
    """argparse type accepting true/false (Kaldi style) and the usual yes/no/1/0."""
    if isinstance(value, bool):
        return value
    v = value.lower()
    if v in ("true", "yes", "1", "t", "y"):
        return True
    if v in ("false", "no", "0", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")

"""Logging: a concise console on stderr and a rotating log file under `.mlvs/logs/`."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOGGER = "mlvs"


class _QuietFileHandler(logging.handlers.RotatingFileHandler):
    """The log file; on a full disk or a read-only directory it falls silent instead of printing tracebacks.

    The log is a record, not the work: the command's own error says what failed.
    """

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # logging's name for it
        self.failed = True


def setup_logging(log_dir: Path | None, verbose: bool = False) -> logging.Logger:
    """Configure the `mlvs` logger once per process; safe to call again."""
    logger = logging.getLogger(LOGGER)
    if getattr(logger, "_mlvs_configured", False):
        return logger
    logger.setLevel(logging.DEBUG)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("mlvs: %(message)s"))
    logger.addHandler(console)
    if log_dir is not None:
        try:
            # delay=True: the file appears only when something is logged, so a
            # refused command leaves the workspace exactly as it was.
            log_dir.mkdir(parents=True, exist_ok=True)
            handler = _QuietFileHandler(
                log_dir / "mlvs.log",
                maxBytes=2_000_000,
                backupCount=5,
                encoding="utf-8",
                delay=True,
            )
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
        except OSError:
            logger.debug("log directory %s is not writable; logging to the console only", log_dir)
    logger.propagate = False
    logger._mlvs_configured = True  # type: ignore[attr-defined]
    return logger


def get_logger(name: str = "") -> logging.Logger:
    """A child of the `mlvs` logger."""
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)

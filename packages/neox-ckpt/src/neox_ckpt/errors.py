"""The one error type neox-ckpt raises for bad input; the CLI prints it without a traceback."""

from __future__ import annotations


class ConversionError(ValueError):
    """Input that cannot be converted: names the file, tensor or config key at fault."""

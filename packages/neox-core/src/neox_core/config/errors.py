"""The one exception the config layer raises; its message always names the file, line or key."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or value that neox cannot accept, with where it came from."""

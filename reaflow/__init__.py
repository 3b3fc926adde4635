"""ReaFlow core: settings, lake paths and atomic writes, data contracts, the CLI."""

__version__ = "0.1.0"

"""The Feast feature repository and materialization helpers."""

"""Fetch a public dataset archive once, verified by checksum, or use a local copy."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from reaflow.errors import InputError


def fetch_zip(url: str, md5: str, cache_dir: Path, timeout: float = 60) -> Path:
    """Download ``url`` into ``cache_dir`` (once), check its MD5, unpack it; return the unpacked folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / url.rsplit("/", 1)[-1]
    if not archive.exists() or _md5(archive) != md5:
        partial = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise InputError(f"could not download {url} ({exc}); pass --path to a local copy") from None
        got = _md5(partial)
        if got != md5:
            partial.unlink(missing_ok=True)
            raise InputError(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
        partial.replace(archive)
    folder = cache_dir / archive.stem
    if not folder.is_dir():
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(cache_dir)
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

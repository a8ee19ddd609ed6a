"""Download the graph data sets that cannot be generated (EXP, SR25): resumable, checksummed, validated.

``equiframe data fetch exp|sr25`` (or :func:`fetch`) downloads a data set from its public source into the
data directory (``--data-dir``, else ``$EQUIFRAME_DATA``, else ``~/.cache/equiframe/data``), the directory the
graph experiments read (:func:`find_data_file`). A download goes to ``<file>.part`` and resumes from there
with an HTTP ``Range`` request when it was interrupted; the finished file is checked against its SHA-256
(where known) and validated by its loader (counts, pairing, SRG parameters) before it is moved into place.
A file that fails either check is deleted and a ``ValueError`` says why. Nothing is ever unpickled.

Sources (pinned commits, so the checksums hold):

========  =====================================================================================  ==========
data set  default URL                                                                            format
========  =====================================================================================  ==========
exp       ``https://raw.githubusercontent.com/ralphabb/GNN-RNI/43c69c06462d3a165ba2b532d76cbc045    text
          fc767d7/Data/EXP/GRAPHSAT.txt`` (Abboud et al., 2021; GPL-3.0)
sr25      ``https://raw.githubusercontent.com/XiaoxinHe/Graph-MLPMixer/0d66dd1b0d8376e9252a73d60c10  graph6
          940ac626ca81/dataset/sr25/raw/sr251256.g6`` (MIT; a copy of McKay's
          ``https://users.cecs.anu.edu.au/~bdm/data/sr251256.g6``)
========  =====================================================================================  ==========

The EXP text release ``Data/EXP/GRAPHSAT.txt`` is a different random draw of EXP than the pickled
``Data/EXP/raw/GRAPHSAT.pkl`` of the same commit, from which the project's ``exp_graphsat.npz`` was converted
(both have 1200 graphs in 600 1-WL-equivalent SAT / UNSAT pairs; compared graph by graph, the npz equals the
pickle in all 1200 graphs and the text release in none). Every committed EXP number of this repository was
measured on the npz; :func:`find_data_file` prefers it when both are present, and the graph experiments record
the file they read (:func:`data_source`).
``--url`` fetches any file in a supported format (``.txt``, ``.npz``, ``.g6``), e.g. an offline mirror.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlparse

__all__ = [
    "KNOWN_SHA256",
    "SOURCES",
    "DataSource",
    "FetchDataset",
    "add_cli",
    "data_source",
    "default_data_dir",
    "fetch",
    "find_data_file",
]

FetchDataset = Literal["exp", "sr25"]


@dataclass(frozen=True)
class DataSource:
    """Where a data set comes from: its default URL, file name, licence and origin."""

    url: str
    filename: str
    license: str
    origin: str


SOURCES: dict[str, DataSource] = {
    "exp": DataSource(
        url="https://raw.githubusercontent.com/ralphabb/GNN-RNI/43c69c06462d3a165ba2b532d76cbc045fc767d7/"
            "Data/EXP/GRAPHSAT.txt",
        filename="GRAPHSAT.txt", license="GPL-3.0",
        origin="Abboud, Ceylan, Grohe, Lukasiewicz, IJCAI 2021 (github.com/ralphabb/GNN-RNI)"),
    "sr25": DataSource(
        url="https://raw.githubusercontent.com/XiaoxinHe/Graph-MLPMixer/0d66dd1b0d8376e9252a73d60c10940ac626ca81/"
            "dataset/sr25/raw/sr251256.g6",
        filename="sr251256.g6", license="MIT (copy of B. McKay's collection, users.cecs.anu.edu.au/~bdm/data)",
        origin="McKay's strongly regular graphs SRG(25,12,5,6)"),
}

#: file names every data set may be stored under (the first is preferred when several are present)
FILENAMES: dict[str, tuple[str, ...]] = {"exp": ("exp_graphsat.npz", "GRAPHSAT.txt"), "sr25": ("sr251256.g6",)}

#: SHA-256 of the files whose content is known (the default downloads and the project's converted copies)
KNOWN_SHA256: dict[str, str] = {
    "GRAPHSAT.txt": "16f24a5ad96400b2d53eb5cd2843fb2006e50ed67821f6c4abe5ae23100bf899",
    "exp_graphsat.npz": "3d8dc558437b09c083635b37971b342dab3ab8a115c9314487ab17ef850ddfd1",
    "sr251256.g6": "f55f86eb48cd61c3315c62341cc3a8c59289c58504edb3ab859d7ef2068b9aa4",
}

#: number of graphs of every data set (checked after loading)
EXPECTED_GRAPHS = {"exp": 1200, "sr25": 15}


def default_data_dir() -> Path:
    """``$EQUIFRAME_DATA`` if set, else ``~/.cache/equiframe/data``."""
    v = os.environ.get("EQUIFRAME_DATA")
    return Path(v).expanduser() if v else Path.home() / ".cache" / "equiframe" / "data"


def find_data_file(dataset: FetchDataset, data_dir: str | os.PathLike | None = None) -> Path:
    """The file of ``dataset`` in ``data_dir`` (default :func:`default_data_dir`); EXP: the npz, else the text.

    Raises:
        FileNotFoundError: naming the directory searched and the command that fetches the data.
    """
    if dataset not in FILENAMES:
        raise ValueError(f"dataset: expected one of {tuple(FILENAMES)}, got {dataset!r}")
    d = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    for name in FILENAMES[dataset]:
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"data_dir: no {' or '.join(FILENAMES[dataset])} in {d}; run `equiframe data fetch "
                            f"{dataset}` (or pass --data-dir / set $EQUIFRAME_DATA to a directory holding it)")


def data_source(dataset: str, data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Which file a run reads for ``dataset`` (``exp`` / ``sr25``: :func:`find_data_file`), for its results:
    ``{"data_file": name, "data_sha256": hex}`` -- the two EXP files are different draws of EXP (see the module
    docstring), so a result must say which one it was measured on. ``{}`` for the generated data sets."""
    if dataset not in FILENAMES:
        return {}
    path = find_data_file(dataset, data_dir)  # type: ignore[arg-type]
    return {"data_file": path.name, "data_sha256": _sha256(path)}


def _target_name(dataset: str, url: str) -> str:
    base = Path(urlparse(url).path).name
    if base in FILENAMES[dataset]:
        return base
    suffix = Path(base).suffix.lower()
    if dataset == "exp":
        return "exp_graphsat.npz" if suffix == ".npz" else "GRAPHSAT.txt"
    return SOURCES[dataset].filename


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, part: Path, *, progress: bool, timeout: float, desc: str) -> None:
    """Download ``url`` into ``part``, resuming from its current size with a ``Range`` request."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "equiframe-data-fetch", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part is complete (checked next)
            return
        raise ConnectionError(f"url: {url} answered HTTP {err.code} ({err.reason})") from None
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"url: cannot reach {url} ({getattr(err, 'reason', err)})") from None
    with resp:
        part.parent.mkdir(parents=True, exist_ok=True)  # created once the source answers (a failed call leaves nothing)
        if offset and resp.status == 206:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise ConnectionError(f"url: {url} answered the range request for bytes {offset}- with "
                                      f"{resp.headers.get('Content-Range')!r}")
            mode = "ab"
        else:  # 200: the server sends the whole file (no range support): start over
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        got = offset
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                          disable=not progress, desc=desc) as bar:
            try:
                while True:
                    block = resp.read(1 << 16)
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    bar.update(len(block))
            except (http.client.HTTPException, ConnectionError, socket.timeout, OSError) as err:
                raise ConnectionError(f"url: the download of {url} was interrupted after {got} bytes ({err!r}); "
                                      f"run the same command again to resume from {part}") from None
        if total is not None and got < total:
            raise ConnectionError(f"url: the download of {url} was interrupted after {got} of {total} bytes; run "
                                  f"the same command again to resume from {part}")


def _validate(dataset: str, path: Path) -> int:
    from .graphs import load_exp, load_sr25  # noqa: PLC0415

    graphs = load_exp(path) if dataset == "exp" else load_sr25(path)
    if len(graphs) != EXPECTED_GRAPHS[dataset]:
        raise ValueError(f"path: {path} holds {len(graphs)} graphs, {dataset} has {EXPECTED_GRAPHS[dataset]}")
    if dataset == "sr25":  # 15 pairwise non-isomorphic graphs
        from ..frames.canonical import canonical_keys  # noqa: PLC0415

        certs = {tuple(canonical_keys(g.edge_index, num_nodes=25, on_budget="raise").certificate[0].tolist())
                 for g in graphs}
        if len(certs) != 15:
            raise ValueError(f"path: {path} holds isomorphic copies ({len(certs)} distinct graphs of 15)")
    return len(graphs)


def fetch(
    dataset: FetchDataset,
    *,
    url: str | None = None,
    data_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    verify_checksum: bool = True,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``dataset`` (resumable), check and validate it, and return the path of the file.

    Args:
        dataset: ``"exp"`` or ``"sr25"``.
        url: where to download from (default :data:`SOURCES`); ``http(s)://`` or ``file://``. The file name of
            the URL picks the format (``.npz`` converted EXP, otherwise the text release; ``.g6`` for SR25).
        data_dir: target directory (default :func:`default_data_dir`); created if missing (once the source
            answers).
        sha256: expected SHA-256 (hex); default: :data:`KNOWN_SHA256` of the target file name, if any.
        verify_checksum: ``False`` skips the checksum (the content is still validated).
        force: download again even if a valid file is present.
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.

    Returns:
        The path of the validated file (what :func:`find_data_file` finds).

    Raises:
        ConnectionError: the server cannot be reached or the transfer broke (the partial file is kept and the
            next call resumes it).
        ValueError: checksum mismatch or invalid content (the file is deleted), or a bad argument.
    """
    if dataset not in SOURCES:
        raise ValueError(f"dataset: expected one of {get_args(FetchDataset)}, got {dataset!r}")
    if url is not None and (not isinstance(url, str) or urlparse(url).scheme not in ("http", "https", "file")):
        raise ValueError(f"url: expected an http(s):// or file:// URL, got {url!r}")
    if sha256 is not None and (not isinstance(sha256, str) or len(sha256) != 64
                               or any(c not in "0123456789abcdef" for c in sha256.lower())):
        raise ValueError(f"sha256: expected 64 hex digits, got {sha256!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    url = url or SOURCES[dataset].url
    d = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if d.exists() and not d.is_dir():
        raise ValueError(f"data_dir: {d} exists and is not a directory")
    name = _target_name(dataset, url)
    dest, part = d / name, d / (name + ".part")
    expected = (sha256 or KNOWN_SHA256.get(name)) if verify_checksum else None
    if dest.is_file() and not force:
        if expected is None or _sha256(dest) == expected.lower():
            _validate(dataset, dest)
            return dest
    _download(url, part, progress=progress, timeout=timeout, desc=f"{dataset} ({name})")
    if expected is not None:
        got = _sha256(part)
        if got != expected.lower():
            part.unlink()
            raise ValueError(f"sha256: the download of {url} has SHA-256 {got}, expected {expected}; the file was "
                             f"removed (a corrupted transfer or a changed file: check --url, or pass --sha256)")
    try:
        _validate(dataset, part)
    except ValueError as err:
        part.unlink()
        raise ValueError(f"url: the file downloaded from {url} is not a valid {dataset} data set and was removed: "
                         f"{err}") from None
    os.replace(part, dest)
    return dest


# ------------------------------------------------------------------------------------------ command line
def _cmd_fetch(args: argparse.Namespace) -> int:
    # errors (ConnectionError, ValueError, OSError) end as one line on stderr, exit code 2 (equiframe.cli.main)
    path = fetch(args.fetch_dataset, url=args.url, data_dir=args.data_dir, sha256=args.sha256,
                 verify_checksum=not args.no_checksum, force=args.force, progress=not args.quiet,
                 timeout=args.timeout)
    src = SOURCES[args.fetch_dataset]
    print(f"{args.fetch_dataset}: {path} (validated; {EXPECTED_GRAPHS[args.fetch_dataset]} graphs). "
          f"Source: {args.url or src.url}; licence {src.license}.")
    return 0


FETCH_DESCRIPTION = ("Download a graph data set that cannot be generated into --data-dir (default $EQUIFRAME_DATA "
                     "or ~/.cache/equiframe/data), where `equiframe train graphs` / `equiframe eval graphs-separation` "
                     "find it. Interrupted downloads resume; the file is checked (SHA-256 where known) and validated "
                     "before use.")


def add_fetch_arguments(fp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options and handler of ``equiframe data graphs exp|sr25`` (= ``equiframe data fetch exp|sr25``)."""
    fp.add_argument("fetch_dataset", choices=get_args(FetchDataset), metavar="DATASET", help="exp or sr25")
    fp.add_argument("--url", default=None, help="download from this URL instead of the default public source")
    fp.add_argument("--data-dir", default=None, help="target directory (default: $EQUIFRAME_DATA or "
                                                     "~/.cache/equiframe/data)")
    fp.add_argument("--sha256", default=None, help="expected SHA-256 of the file (default: known for the default "
                                                   "files)")
    fp.add_argument("--no-checksum", action="store_true", help="skip the checksum (the content is still validated)")
    fp.add_argument("--force", action="store_true", help="download again even if a valid copy is present")
    fp.add_argument("--timeout", type=_positive_seconds, default=60.0, help="socket timeout in seconds")
    fp.add_argument("--quiet", action="store_true", help="no progress bar")
    fp.set_defaults(func=_cmd_fetch, cache_dirs=("data_dir",))  # paths: checked by equiframe.cli.check_paths
    return fp


def _positive_seconds(text: str) -> float:
    from ..cli import _positive_float  # noqa: PLC0415  (the command line's checked argument types)

    return _positive_float(text)


def add_cli(dataset_parsers: argparse._SubParsersAction, name: str = "fetch",
            help: str = "download EXP or SR25 (resumable, checksummed, validated) into the data directory") -> None:
    """Register ``equiframe data fetch exp|sr25 [--url ...]`` (or the same command under another ``name``:
    ``equiframe data graphs exp|sr25``) on the sub-parsers of ``equiframe data``."""
    add_fetch_arguments(dataset_parsers.add_parser(name, help=help, description=FETCH_DESCRIPTION,
                                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter))

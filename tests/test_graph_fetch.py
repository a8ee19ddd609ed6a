"""Data a user can get: ``equiframe data fetch`` against a local HTTP server, and malformed data files.

The server (``http.server`` in a thread on 127.0.0.1, with ``Range`` support) serves ``../shared/data``; it can
break the connection half way through a file (the next fetch resumes) or flip a byte (checksum / validation
mismatch: clear error, nothing kept).
"""

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from equiframe.cli import main
from equiframe.datasets.fetch import KNOWN_SHA256, fetch, find_data_file
from equiframe.datasets.graphs import load_exp, load_graph6, load_sr25, parse_graph6, to_exp_txt, to_graph6

EXP = SHARED_DATA / "exp_graphsat.npz"
SR25 = SHARED_DATA / "sr251256.g6"
pytestmark = pytest.mark.skipif(not (EXP.is_file() and SR25.is_file()), reason=f"no EXP / SR25 in {SHARED_DATA}")


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with optional ``Range: bytes=a-``; ``server.mode``: ``ok``, ``cut`` (first response stops half way,
    then ``ok``), ``corrupt`` (one byte flipped), ``norange`` (ignores Range)."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        path = srv.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_error(404)
            return
        data = bytearray(path.read_bytes())
        if srv.mode == "corrupt":
            data[len(data) // 2] ^= 0x01
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.mode != "norange":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        body = bytes(data[start:])
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if srv.mode == "cut":
            srv.mode = "ok"
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root, srv.mode, srv.requests = SHARED_DATA, "ok", []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_validates_and_is_found(server, tmp_path, monkeypatch):
    srv, base = server
    p = fetch("sr25", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False)
    assert p == tmp_path / "sr251256.g6" and p.read_bytes() == SR25.read_bytes()
    q = fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path, progress=False)
    assert q.name == "exp_graphsat.npz" and len(load_exp(q)) == 1200
    n = len(srv.requests)
    fetch("sr25", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False)  # present and valid: no request
    assert len(srv.requests) == n
    monkeypatch.setenv("EQUIFRAME_DATA", str(tmp_path))
    assert find_data_file("exp") == q and find_data_file("sr25") == p
    from equiframe.experiments.graphs import load_separation_graphs

    assert len(load_separation_graphs("sr25")) == 15
    monkeypatch.setenv("EQUIFRAME_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="equiframe data fetch exp"):
        find_data_file("exp")


def test_interrupted_download_resumes(server, tmp_path):
    srv, base = server
    srv.mode = "cut"
    with pytest.raises(ConnectionError, match="resume"):
        fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path, progress=False)
    part = tmp_path / "exp_graphsat.npz.part"
    assert 0 < part.stat().st_size < EXP.stat().st_size and not (tmp_path / "exp_graphsat.npz").exists()
    p = fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path, progress=False)  # resumes
    assert srv.requests[-1] == f"bytes={part.stat().st_size if part.exists() else EXP.stat().st_size // 2}-"
    assert p.read_bytes() == EXP.read_bytes() and not part.exists()


def test_server_without_range_support_restarts(server, tmp_path):
    srv, base = server
    (tmp_path / "sr251256.g6.part").write_bytes(SR25.read_bytes()[:100])
    srv.mode = "norange"
    p = fetch("sr25", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False)
    assert srv.requests[-1] == "bytes=100-" and p.read_bytes() == SR25.read_bytes()


def test_corrupted_download_is_refused(server, tmp_path):
    srv, base = server
    srv.mode = "corrupt"
    with pytest.raises(ValueError, match="sha256.*removed"):
        fetch("sr25", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
    # without a known checksum the content validation catches it (or the npz does not even open)
    with pytest.raises(ValueError, match="not a valid exp data set and was removed"):
        fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path, progress=False, verify_checksum=False)
    with pytest.raises(ValueError, match="not a valid sr25 data set"):
        fetch("sr25", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False, verify_checksum=False)
    assert list(tmp_path.iterdir()) == []
    srv.mode = "ok"
    with pytest.raises(ValueError, match="sha256"):  # a wrong expected checksum
        fetch("sr25", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False, sha256="0" * 64)
    with pytest.raises(ConnectionError, match="404"):
        fetch("sr25", url=f"{base}/missing.g6", data_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="not a valid exp"):  # the right bytes for another data set
        fetch("exp", url=f"{base}/sr251256.g6", data_dir=tmp_path, progress=False, verify_checksum=False)


def test_fetch_arguments_and_cli(server, tmp_path, capsys):
    srv, base = server
    with pytest.raises(ValueError, match="dataset"):
        fetch("cora", data_dir=tmp_path)
    with pytest.raises(ValueError, match="url"):
        fetch("exp", url="ftp://example.org/x", data_dir=tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path, sha256="abc")
    with pytest.raises(ValueError, match="timeout"):
        fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path, timeout=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="data_dir"):
        fetch("exp", url=f"{base}/exp_graphsat.npz", data_dir=tmp_path / "file")
    assert main(["data", "fetch", "sr25", "--url", f"{base}/sr251256.g6", "--data-dir", str(tmp_path / "d"),
                 "--quiet"]) == 0
    assert "validated" in capsys.readouterr().out
    srv.mode = "corrupt"  # errors: one line on stderr, exit code 2, as every other command
    assert main(["data", "fetch", "sr25", "--url", f"{base}/sr251256.g6", "--data-dir", str(tmp_path / "e"),
                 "--quiet"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("equiframe data: error: sha256") and out.err.count("\n") == 1
    assert main(["data", "fetch", "exp", "--url", "http://127.0.0.1:9/none.txt", "--data-dir", str(tmp_path / "f"),
                 "--quiet", "--timeout", "5"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "error: url: cannot reach" in out.err and "Traceback" not in out.err


def test_original_text_format_of_exp(tmp_path):
    """GRAPHSAT.txt (GNN-RNI's text release) reads into the same graphs as the converted npz."""
    graphs = load_exp(EXP)
    p = tmp_path / "GRAPHSAT.txt"
    p.write_text(to_exp_txt(graphs))
    again = load_exp(p)
    assert len(again) == 1200
    for a, b in zip(graphs[::37], again[::37]):
        assert torch.equal(a.x, b.x) and int(a.y) == int(b.y) and a.num_nodes == b.num_nodes
        assert set(map(tuple, a.edge_index.t().tolist())) == set(map(tuple, b.edge_index.t().tolist()))
    assert KNOWN_SHA256["GRAPHSAT.txt"] != KNOWN_SHA256["exp_graphsat.npz"]


# ------------------------------------------------------------------------------------------ malformed files
def _exp_arrays():
    with np.load(EXP) as z:
        return {k: z[k].copy() for k in z.files}


@pytest.mark.parametrize("case", ["truncated", "not a zip", "float pointers", "wrong count", "pointer not rising",
                                  "bad node type", "bad label", "one direction", "self-loop", "odd count",
                                  "wrong pairing", "pickled object"])
def test_malformed_exp_npz(tmp_path, case):
    p = tmp_path / "exp.npz"
    a = _exp_arrays()
    if case == "truncated":
        p.write_bytes(EXP.read_bytes()[: EXP.stat().st_size // 2])
    elif case == "not a zip":
        p.write_bytes(b"PK\x03\x04garbage")
    else:
        if case == "float pointers":
            a["node_ptr"] = a["node_ptr"].astype(np.float64)
        elif case == "wrong count":
            a["x"] = a["x"][:-3]
        elif case == "pointer not rising":
            a["node_ptr"][5] = a["node_ptr"][7]
        elif case == "bad node type":
            a["x"][10] = 2
        elif case == "bad label":
            a["y"][3] = 7
        elif case == "one direction":
            a["edge_index"][1, 0] = (a["edge_index"][1, 0] + 1) % 5
        elif case == "self-loop":
            a["edge_index"][1, 0] = a["edge_index"][0, 0]
        elif case == "odd count":
            a = {"node_ptr": a["node_ptr"][:4], "edge_ptr": a["edge_ptr"][:4], "y": a["y"][:3],
                 "x": a["x"][: a["node_ptr"][3]], "edge_index": a["edge_index"][:, : a["edge_ptr"][3]]}
        elif case == "wrong pairing":
            a["y"][1] = a["y"][0]
        elif case == "pickled object":
            a["y"] = np.array([object()] * 1200, dtype=object)
        np.savez(p, **a)
    with pytest.raises(ValueError, match=str(p).replace(".", r"\.")):
        load_exp(p)


@pytest.mark.parametrize("case", ["truncated file", "truncated line", "bad character", "wrong count",
                                  "wrong degree", "extra data", "not undirected", "label"])
def test_malformed_exp_text(tmp_path, case):
    graphs = load_exp(EXP)[:4]
    lines = to_exp_txt(graphs).splitlines()
    if case == "truncated file":
        lines = lines[: len(lines) // 2]
    elif case == "truncated line":
        lines[3] = lines[3].rsplit(" ", 1)[0]
    elif case == "bad character":
        lines[2] = lines[2] + " x"
    elif case == "wrong count":
        lines[0] = "6"
    elif case == "wrong degree":
        parts = lines[2].split()
        lines[2] = " ".join([parts[0], str(int(parts[1]) + 1)] + parts[2:])
    elif case == "extra data":
        lines.append("1 0")
    elif case == "not undirected":
        parts = lines[2].split()
        lines[2] = " ".join([parts[0], str(int(parts[1]) + 1)] + parts[2:] + [str(graphs[0].num_nodes - 1)])
    elif case == "label":
        lines[1] = lines[1].split()[0] + " 3"
    p = tmp_path / "GRAPHSAT.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="path: "):
        load_exp(p)


@pytest.mark.parametrize("case", ["truncated", "bad character", "wrong count", "not srg", "padding", "sparse6"])
def test_malformed_sr25_and_graph6(tmp_path, case):
    lines = SR25.read_bytes().splitlines()
    if case == "truncated":
        lines[4] = lines[4][:-3]
    elif case == "bad character":
        lines[2] = lines[2][:10] + b" " + lines[2][11:]
    elif case == "wrong count":
        lines = lines[:14]
    elif case == "not srg":
        n, edges = parse_graph6(lines[0])
        lines[0] = to_graph6(edges[1:], n).encode()
    elif case == "padding":
        lines[0] = lines[0][:-1] + bytes([lines[0][-1] | 1]) if 25 * 24 // 2 % 6 else lines[0]
        if lines[0] == SR25.read_bytes().splitlines()[0]:  # 300 bits: no padding in SR25; use a 5-node graph
            p = tmp_path / "pad.g6"
            p.write_bytes(b"D?" + bytes([63 + 1]) + b"\n")
            with pytest.raises(ValueError, match="padding"):
                load_graph6(p)
            return
    elif case == "sparse6":
        lines[0] = b":" + lines[0][1:]
    p = tmp_path / "sr.g6"
    p.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=r"sr\.g6"):
        load_sr25(p)


def test_the_npz_is_preferred_and_runs_record_their_file(tmp_path):
    """Both EXP draws validate; with both present the npz (the committed numbers' draw) is read, and a run says
    which file it read."""
    from equiframe.datasets.fetch import _validate, data_source  # noqa: PLC0415
    from equiframe.experiments.graphs import separate  # noqa: PLC0415

    (tmp_path / "GRAPHSAT.txt").write_text(to_exp_txt(load_exp(EXP)[::-1]))  # another order: another file
    assert _validate("exp", tmp_path / "GRAPHSAT.txt") == 1200
    txt = data_source("exp", tmp_path)
    assert txt["data_file"] == "GRAPHSAT.txt" and len(txt["data_sha256"]) == 64
    (tmp_path / "exp_graphsat.npz").write_bytes(EXP.read_bytes())
    assert find_data_file("exp", tmp_path).name == "exp_graphsat.npz"
    assert data_source("exp", tmp_path) == {"data_file": "exp_graphsat.npz", "data_sha256": KNOWN_SHA256["exp_graphsat.npz"]}
    assert data_source("csl") == {}
    res = separate("sr25", "gin", seeds=1, data_dir=SR25.parent, progress=False)
    assert res["data_file"] == "sr251256.g6" and res["data_sha256"] == KNOWN_SHA256["sr251256.g6"]

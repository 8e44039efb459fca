"""`adapt fetch`: downloads from a local HTTP server on 127.0.0.1 serving files made here (the
release table points at it), never from the network."""

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest
import torch

from adaptsr.adapt import releases
from adaptsr.adapt.fetch import cache_dir, cached_path, fetch
from adaptsr.adapt.models import build_model, load_model, save_model
from adaptsr.core.errors import UserError

NAME = "swinir-light-x2"  # any configuration with a recorded release


class Server:
    """Serves `files` (path -> bytes); `drops` cuts that many responses after half their body;
    `ranges` answers Range requests (else the whole file, as some servers do)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drops = 0
        self.ranges = True
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(dict(self.headers))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                rest = body[start:]
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if server.drops:
                    server.drops -= 1
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(rest)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTSR_CACHE", str(tmp_path / "cache"))
    s = Server()
    yield s
    s.close()


def publish(server, monkeypatch, body: bytes, sha256: str | None = None, name: str = NAME):
    """Serve `body` as the release of `name`; the release table records its size and sha256."""
    release = releases.RELEASES[name]
    server.files["/" + release.file] = body
    fake = replace(
        release,
        url=f"{server.url}/{release.file}",
        size=len(body),
        sha256=sha256 or hashlib.sha256(body).hexdigest(),
    )
    monkeypatch.setitem(releases.RELEASES, name, fake)
    return fake


def test_good_download_lands_checked_in_the_cache(server, monkeypatch):
    body = bytes(range(256)) * 5000
    release = publish(server, monkeypatch, body)
    path = fetch(NAME, progress=False)
    assert path == cache_dir() / release.file and path.read_bytes() == body
    assert cached_path(NAME) == path
    assert not list(cache_dir().glob("*.part"))
    fetch(NAME, progress=False)  # already cached: no second download
    assert len(server.requests) == 1


def test_sha256_mismatch_is_one_line_and_nothing_is_kept(server, monkeypatch):
    publish(server, monkeypatch, b"x" * 10_000, sha256="0" * 64)
    with pytest.raises(UserError, match="sha256") as e:
        fetch(NAME, progress=False)
    assert "\n" not in str(e.value)
    assert list(cache_dir().iterdir()) == []
    assert cached_path(NAME) is None


def test_partial_download_resumes_with_a_range_request(server, monkeypatch):
    body = bytes(range(256)) * 4000
    release = publish(server, monkeypatch, body)
    cache_dir().mkdir(parents=True)
    (cache_dir() / (release.file + ".part")).write_bytes(body[:300_000])  # a killed download
    path = fetch(NAME, progress=False)
    assert path.read_bytes() == body
    assert server.requests[0]["Range"] == "bytes=300000-"


def test_partial_download_restarts_when_the_server_ignores_ranges(server, monkeypatch):
    body = bytes(range(256)) * 4000
    release = publish(server, monkeypatch, body)
    server.ranges = False
    cache_dir().mkdir(parents=True)
    (cache_dir() / (release.file + ".part")).write_bytes(b"?" * 1000)  # not even the right bytes
    assert fetch(NAME, progress=False).read_bytes() == body


def test_a_dropped_connection_resumes_within_one_fetch(server, monkeypatch):
    body = bytes(range(256)) * 4000
    publish(server, monkeypatch, body)
    server.drops = 1
    assert fetch(NAME, progress=False).read_bytes() == body
    assert len(server.requests) == 2 and server.requests[1]["Range"] == f"bytes={len(body) // 2}-"


def test_a_server_that_keeps_dropping_leaves_a_partial_to_resume(server, monkeypatch):
    body = bytes(range(256)) * 4000
    release = publish(server, monkeypatch, body)
    server.drops = 100
    with pytest.raises(UserError, match="run `adapt fetch swinir-light-x2` again") as e:
        fetch(NAME, progress=False)
    assert "\n" not in str(e.value)
    part = cache_dir() / (release.file + ".part")
    assert 0 < part.stat().st_size < len(body) and not (cache_dir() / release.file).exists()
    server.drops = 0
    assert fetch(NAME, progress=False).read_bytes() == body  # the next fetch finishes it


def test_not_found_is_one_line(server, monkeypatch):
    publish(server, monkeypatch, b"abc")
    server.files.clear()
    with pytest.raises(UserError, match="HTTP 404"):
        fetch(NAME, progress=False)
    assert cached_path(NAME) is None


def test_unknown_release_names_the_ones_there_are(server):
    with pytest.raises(UserError, match="no official release is recorded for 'edsr-x2'"):
        fetch("edsr-x2")


def test_cli_fetch_then_model_name_uses_the_cached_weights(server, monkeypatch, run_cli, tmp_path):
    """`adapt fetch NAME` and then load_model(NAME) loads the fetched weights, not random ones."""
    name = "safmn-x2"
    weights = build_model(name, seed=7)
    save_model(weights, tmp_path / "official.pth")
    release = releases.RELEASES[NAME]
    monkeypatch.setitem(releases.RELEASES, name, replace(release, config=name))
    publish(server, monkeypatch, (tmp_path / "official.pth").read_bytes(), name=name)
    assert not torch.equal(_first(load_model(name)), _first(weights))  # random before
    code, out, err = run_cli("fetch", name, "--quiet")
    assert code == 0, err
    assert str(cache_dir()) in out
    assert torch.equal(_first(load_model(name)), _first(weights))
    code, out, _ = run_cli("models")
    assert f"{name} " in out and "fetched" in out


def test_cli_fetch_refusal_is_one_line(server, monkeypatch, run_cli):
    publish(server, monkeypatch, b"y" * 100, sha256="1" * 64)
    code, _, err = run_cli("fetch", NAME, "--quiet")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "sha256" in err


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTSR_CACHE", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here"
    monkeypatch.delenv("ADAPTSR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "adaptsr" / "weights"


def _first(model):
    return next(iter(model.state_dict().values()))

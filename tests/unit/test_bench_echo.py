"""The echo limit's server: a real Thrift client gets real replies from it over loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.rpc import make_client
from thriftpy2.transport import TFramedTransportFactory

from bench import echo_limit, procs

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler"
)


def test_echo_answers_score_and_info_with_the_canned_replies(tmp_path: Path) -> None:
    thrift = echo_limit.thrift_module()
    binary = echo_limit.build_echo_server(tmp_path / "build")
    scores = [(f"dsp-{i:02d}", i / 20, i % 2 == 0) for i in range(1, 17)]
    info = thrift.ModelInfo(
        name="m",
        version="v7",
        sha256="ab" * 32,
        bidders=[s[0] for s in scores],
        feature_count=55,
        backend="native",
        thresholds={s[0]: 0.1 for s in scores},
    )
    specs = echo_limit.write_replies(
        tmp_path / "replies",
        {
            "score": echo_limit.score_reply(thrift, "req-9", "v7", scores),
            "info": echo_limit.info_reply(thrift, info),
        },
    )
    port = procs.free_port()
    server = procs.start_server(
        "echo", [str(binary), str(port), *specs], core=None, log_dir=tmp_path
    )
    with procs.running(server):
        procs.wait_until(server, procs.port_open(port), 10, "listening")
        client = make_client(
            thrift.ModelServer,
            "127.0.0.1",
            port,
            proto_factory=TBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            trans_factory=TFramedTransportFactory(),
            timeout=5000,
        )
        try:
            assert client.info() == info
            # Several calls on one connection: each reply carries its own sequence id.
            for _ in range(3):
                response = client.score(b'{"id":"x","imp":[{"id":"1"}]}', ["dsp-01"])
                assert response.request_id == "req-9"
                assert [s.bidder for s in response.scores] == [s[0] for s in scores]
                assert response.scores[1].forward is True
        finally:
            client.close()
    assert server.popen.returncode is not None
    assert server.stopped


def test_a_method_without_a_reply_drops_the_connection(tmp_path: Path) -> None:
    thrift = echo_limit.thrift_module()
    binary = echo_limit.build_echo_server(tmp_path / "build")
    specs = echo_limit.write_replies(
        tmp_path / "replies", {"score": echo_limit.score_reply(thrift, "r", "v", [])}
    )
    port = procs.free_port()
    server = procs.start_server(
        "echo", [str(binary), str(port), *specs], core=None, log_dir=tmp_path
    )
    with procs.running(server):
        procs.wait_until(server, procs.port_open(port), 10, "listening")
        client = make_client(
            thrift.ModelServer,
            "127.0.0.1",
            port,
            proto_factory=TBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            trans_factory=TFramedTransportFactory(),
            timeout=5000,
        )
        try:
            with pytest.raises(Exception, match=r"TSocket|closed|read"):
                client.info()
        finally:
            client.close()
        server.ensure_alive()  # the server itself carries on


def test_bad_reply_specs_are_refused(tmp_path: Path) -> None:
    binary = echo_limit.build_echo_server(tmp_path / "build")
    bad = tmp_path / "bad.reply"
    bad.write_bytes(b"\x00" * 32)  # not a strict binary Thrift frame
    server = procs.start_server(
        "echo", [str(binary), "0", f"score={bad}"], core=None, log_dir=tmp_path
    )
    with procs.running(server):
        assert server.popen.wait(10) == 2
    assert "not a strict binary Thrift frame" in (tmp_path / "echo.log").read_text()

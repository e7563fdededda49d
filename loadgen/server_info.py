"""The server's own description of the model and pod it serves: one `info` call."""

from __future__ import annotations

from typing import Any

from loadgen.connections import Target
from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.wire import thrift_module


def server_info(target: Target, timeout_s: float) -> Any:
    """The ModelInfo struct the server at `target` answers with (framed, binary protocol)."""
    from thriftpy2.protocol import TBinaryProtocolFactory
    from thriftpy2.rpc import make_client
    from thriftpy2.transport import TFramedTransportFactory

    try:
        client = make_client(
            thrift_module().ModelServer,
            target.host,
            target.port,
            proto_factory=TBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            trans_factory=TFramedTransportFactory(),
            timeout=int(timeout_s * 1000),
        )
    except Exception as exc:
        raise LoadgenError(ExitCode.UNREACHABLE, f"info call to {target}: {exc}") from None
    try:
        return client.info()
    except Exception as exc:
        raise LoadgenError(ExitCode.UNREACHABLE, f"info call to {target}: {exc}") from None
    finally:
        client.close()

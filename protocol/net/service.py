"""The gRPC service both sides share: one bidirectional stream of transport frames per client.

``/secagg.v1.Aggregation/Session`` carries raw bytes (no protobuf code generation): each gRPC
message is one frame of :mod:`protocol.net.frames`, whose PROTOCOL frames hold the protocol's
own canonical wire encoding. A client keeps one stream open across rounds; the server pushes
each stage's message and the client answers on the same stream.
"""

from __future__ import annotations

import grpc

SERVICE = "secagg.v1.Aggregation"
METHOD = "Session"
PATH = f"/{SERVICE}/{METHOD}"

# Detect peers that vanished without closing the connection (kill -9 closes the socket, but
# a pulled cable does not): ping every 10 s, give up after 10 s without an answer.
KEEPALIVE = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.keepalive_permit_without_calls", 1),
             ("grpc.http2.max_pings_without_data", 0)]


def server_options(max_receive: int) -> list[tuple[str, int]]:
    return KEEPALIVE + [("grpc.max_receive_message_length", max_receive),
                        ("grpc.max_send_message_length", -1),
                        ("grpc.max_concurrent_streams", 4),
                        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                        ("grpc.so_reuseport", 0)]


def client_options(server_name: str | None, max_receive: int) -> list[tuple[str, object]]:
    opts: list[tuple[str, object]] = KEEPALIVE + [
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.max_send_message_length", -1),
        # each client has its own certificate: never share a connection between clients
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_retries", 0)]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return opts


def handler(session) -> grpc.GenericRpcHandler:
    """The generic handler for ``session(request_iterator, context)``; bytes in, bytes out."""
    return grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(session)})

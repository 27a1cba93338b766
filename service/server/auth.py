"""Optional bearer-token check: a server interceptor. Health and reflection answer without it,
so load balancers, orchestrators and grpcurl can probe a server that requires a token."""

from __future__ import annotations

import hmac

import grpc

# Methods under these prefixes need no token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        given = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode("latin-1")
                break
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        return _refusal(handler, "missing or wrong token: send the metadata "
                        "'authorization: Bearer <token>' with the server's --auth-token")


def _refusal(handler: grpc.RpcMethodHandler | None, details: str):
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""
    if handler is None:
        return None  # unknown method: grpc answers UNIMPLEMENTED

    def deny(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)

    def deny_stream(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, details)
        yield  # pragma: no cover - a generator, like the handler it replaces

    kwargs = dict(request_deserializer=handler.request_deserializer,
                  response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)

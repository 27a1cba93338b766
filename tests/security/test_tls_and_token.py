"""Security: optional TLS (server flags --tls-cert/--tls-key; client `root_certificates`, CLI
--ca-cert/--tls) and an optional bearer token (server --auth-token; client `token`, CLI
--token or JITNET_TOKEN). Without the token, or with a wrong one, every NetworkService call is
UNAUTHENTICATED, malformed ones too; health and reflection answer without it, for probes.

The real command (`python -m jitnet.service.server`) runs with the flags, and the client
library and the `jitnet` CLI talk to it; every RPC is checked against an in-process server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.client import Client, cli, errors
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from tests.support.rpc import RPCS, SERVICE, SERVING, TIMEOUT, C, error_of, model_calls
from tests.support.tls import self_signed_certificate

TOKEN = "correct-horse-battery-staple"


@pytest.fixture
def secure(spawn, tmp_path):
    """A subprocess server with TLS and a token, SERVING; yields (server, cert path)."""
    cert, key = self_signed_certificate(tmp_path)
    server = spawn("--tls-cert", str(cert), "--tls-key", str(key), "--auth-token", TOKEN,
                   serving=False)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        server.wait_serving(channel=channel)
    return server, cert


@pytest.mark.slow
def test_tls_and_token_through_the_client_library(secure):
    server, cert = secure
    target = f"localhost:{server.port}"
    # the certificate as bytes, and as a path
    with Client(target, root_certificates=cert.read_bytes(), token=TOKEN) as client:
        assert client.create_model([2, 3, 1], model_id="secure").version == 1
        assert [m.id for m in client.list_models()] == ["secure"]
        assert client.health() == "SERVING"
    with Client(target, tls=True, root_certificates=str(cert)) as client:  # TLS, no token
        with pytest.raises(errors.Unauthenticated) as info:
            client.list_models()
        assert info.value.code == C.UNAUTHENTICATED
        assert client.health() == "SERVING"  # probes need no token
    with Client(target, root_certificates=str(cert), token="wrong") as client:
        with pytest.raises(errors.Unauthenticated):
            client.get_model("secure")
    with Client(f"127.0.0.1:{server.port}", timeout=2) as plaintext:
        with pytest.raises(errors.Unavailable):
            plaintext.health()
    # plaintext against the TLS port, and TLS without trusting the certificate: no connection
    for channel in (grpc.insecure_channel(f"127.0.0.1:{server.port}"),
                    grpc.secure_channel(target, grpc.ssl_channel_credentials())):
        with channel:
            exc = error_of(lambda channel=channel: pb_grpc.NetworkServiceStub(channel).ListModels(
                pb.ListModelsRequest(), timeout=3, metadata=(("authorization",
                                                              f"Bearer {TOKEN}"),)))
            assert exc.code() in (C.UNAVAILABLE, C.DEADLINE_EXCEEDED), exc
    assert TOKEN not in server.log  # the secret is never logged
    assert "TLS" in server.log and "auth bearer token" in server.log


@pytest.mark.slow
def test_tls_and_token_through_the_cli(secure, capsys, monkeypatch):
    server, cert = secure
    connect = ["--target", f"localhost:{server.port}", "--ca-cert", str(cert)]
    assert cli.main([*connect, "--token", TOKEN, "create", "--id", "c", "--layers", "2,3,1"]) == 0
    assert cli.main([*connect, "--token", TOKEN, "models", "list"]) == 0
    assert "c" in capsys.readouterr().out
    # the flag after the command works too, and so does JITNET_TOKEN
    assert cli.main(["models", "show", "c", *connect, "--token", TOKEN]) == 0
    monkeypatch.setenv("JITNET_TOKEN", TOKEN)
    assert cli.main([*connect, "predict", "c", "--input", "0,1"]) == 0
    monkeypatch.delenv("JITNET_TOKEN")
    capsys.readouterr()
    for token in ([], ["--token", "wrong"]):
        code = cli.main([*connect, *token, "models", "list"])
        err = capsys.readouterr().err
        assert code != 0 and "token" in err and err.count("\n") == 1, (code, err)
    # health is open: the CLI's probe works without a token
    assert cli.main([*connect, "health"]) == 0
    assert "SERVING" in capsys.readouterr().out


def _every_call(server, metadata) -> dict:
    """Every RPC (model "m" is 2-1), and bytes that do not parse, with this metadata."""
    stub = server.stub
    return {
        **model_calls(stub, "m", metadata=metadata),
        "CreateModel": lambda: stub.CreateModel(pb.CreateModelRequest(
            model_id="n", architecture=pb.Architecture(layer_sizes=[2, 1])), timeout=TIMEOUT,
            metadata=metadata),
        "ListModels": lambda: stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT,
                                              metadata=metadata),
        "DeleteModel": lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="m"),
                                                timeout=TIMEOUT, metadata=metadata),
        # bytes that do not parse: refused for the token first, telling nothing of the parse
        "garbage": lambda: server.channel.unary_unary(f"/{SERVICE}/GetModel")(
            b"\xff\xff", timeout=TIMEOUT, metadata=metadata),
    }


def test_without_the_token_every_call_is_unauthenticated_but_probes_answer(make_server):
    server = make_server(auth_token=TOKEN)
    stub = server.stub
    good = (("authorization", f"Bearer {TOKEN}"),)
    stub.CreateModel(pb.CreateModelRequest(model_id="m", architecture=pb.Architecture(
        layer_sizes=[2, 1])), timeout=TIMEOUT, metadata=good)
    wrong = [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),),
             (("authorization", f"Bearer {TOKEN}x"),), (("authorization", f"Bearer {TOKEN[:-1]}"),),
             (("authorization", f"bearer {TOKEN}"),), (("authorization", f"Basic {TOKEN}"),),
             (("x-token", TOKEN),)]
    for metadata in wrong:
        calls = _every_call(server, metadata)
        assert set(RPCS) < set(calls)
        for name, call in calls.items():
            exc = error_of(call)
            assert exc.code() == C.UNAUTHENTICATED, (name, metadata, exc.code())
            assert "Bearer" in exc.details() and TOKEN not in exc.details()
    # nothing happened: the model is there, unchanged, and nothing else was made
    listed = stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT, metadata=good).models
    assert [(m.id, m.version) for m in listed] == [("m", 1)]
    # with the token, a stream works too
    assert list(model_calls(stub, "m", metadata=good)["Train"]())[-1].model_version == 2
    # probes and reflection need no token
    health = health_pb2_grpc.HealthStub(server.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE),
                        timeout=TIMEOUT).status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert next(watch).status == SERVING
    watch.cancel()
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    assert SERVICE in ProtoReflectionDescriptorDatabase(server.channel).get_services()

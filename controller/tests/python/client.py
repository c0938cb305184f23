"""A controller client in Python, from stubs generated out of faultline's .proto files.

usage: client.py STUB_DIR CONTROLLER_ADDR INTERFACE TLS_DIR
Connects with mutual TLS (the CLI's certificate from TLS_DIR); checks that callers
without a certificate, or without TLS, are refused. Lists agents, applies a drop fault to all of them, lists faults, reverts it, reads the
event history; prints one
JSON object with what it saw, for the Rust test to check.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from faultline.agent.v1 import agent_pb2  # noqa: E402
from faultline.controller.v1 import controller_pb2, controller_pb2_grpc  # noqa: E402

addr, interface, tls = sys.argv[2], sys.argv[3], sys.argv[4]


def read(name):
    with open(f"{tls}/{name}", "rb") as f:
        return f.read()


# The controller's certificate names its role, not its address.
name = [("grpc.ssl_target_name_override", "controller.faultline")]


def refused(channel):
    try:
        controller_pb2_grpc.ControllerServiceStub(channel).ListAgents(controller_pb2.ListAgentsRequest(), timeout=10)
        return None
    except grpc.RpcError as e:
        return e.code().name


with grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=read("ca.pem")), options=name) as c:
    no_cert = refused(c)
with grpc.insecure_channel(addr) as c:
    plaintext = refused(c)

creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("cli-key.pem"), certificate_chain=read("cli.pem"))
with grpc.secure_channel(addr, creds, options=name) as channel:
    ctl = controller_pb2_grpc.ControllerServiceStub(channel)
    agents = ctl.ListAgents(controller_pb2.ListAgentsRequest()).agents
    spec = agent_pb2.FaultSpec(
        interface=interface,
        lease_ms=60_000,
        drop=agent_pb2.Drop(percent=5.0),
        label="python client",
    )
    applied = ctl.ApplyFault(controller_pb2.ApplyFaultRequest(target=controller_pb2.Target(selector="zone=a"), spec=spec)).fault
    listed = ctl.ListFaults(controller_pb2.ListFaultsRequest()).faults
    reverted = ctl.RevertFault(controller_pb2.RevertFaultRequest(id=applied.id)).reverted
    try:
        ctl.ApplyFault(controller_pb2.ApplyFaultRequest(target=controller_pb2.Target(selector="role=nope"), spec=spec))
        error = None
    except grpc.RpcError as e:
        error = {"code": e.code().name, "details": e.details()}
    # The last two stored events: the apply and the revert above (a refusal by
    # selector is the caller's typo, not an event).
    events = list(ctl.WatchEvents(controller_pb2.WatchEventsRequest(last=2)))
    # Bytes no protobuf library would send: spec.interface (field 2 > field 1) as invalid
    # UTF-8. A malformed request is the caller's error, not the server's.
    raw = channel.unary_unary("/faultline.controller.v1.ControllerService/ApplyFault")
    try:
        raw(b"\x12\x05\x0a\x03\xff\xfe\xfd")
        invalid_utf8 = "OK"
    except grpc.RpcError as e:
        invalid_utf8 = e.code().name
    print(json.dumps({
        "agents": sorted(a.name for a in agents),
        "healthy": all(a.healthy for a in agents),
        "applied_on": sorted(p.agent for p in applied.placements),
        "listed": [f.id for f in listed],
        "applied_id": applied.id,
        "reverted": list(reverted),
        "error": error,
        "refused": {"no_cert": no_cert, "plaintext": plaintext},
        "invalid_utf8": invalid_utf8,
        "events": [[controller_pb2.EventKind.Name(e.kind), e.fault_id] for e in events],
    }))

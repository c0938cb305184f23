"""A controller client in Python, from stubs generated out of faultline's .proto files.

usage: client.py STUB_DIR CONTROLLER_ADDR INTERFACE
Lists agents, applies a drop fault to all of them, lists faults, reverts it, reads the
event history; prints one
JSON object with what it saw, for the Rust test to check.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from faultline.agent.v1 import agent_pb2  # noqa: E402
from faultline.controller.v1 import controller_pb2, controller_pb2_grpc  # noqa: E402

addr, interface = sys.argv[2], sys.argv[3]
with grpc.insecure_channel(addr) as channel:
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
    print(json.dumps({
        "agents": sorted(a.name for a in agents),
        "healthy": all(a.healthy for a in agents),
        "applied_on": sorted(p.agent for p in applied.placements),
        "listed": [f.id for f in listed],
        "applied_id": applied.id,
        "reverted": list(reverted),
        "error": error,
        "events": [[controller_pb2.EventKind.Name(e.kind), e.fault_id] for e in events],
    }))

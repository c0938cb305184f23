"""N console-like clients following GET /api/events/stream at once (one thread each),
timestamping every event on arrival. Reads until each has seen EXPECT fault events or
TIMEOUT seconds pass, then prints one JSON line: events per client and delivery latency
(arrival minus the event's own unix_ms; same host, same clock).

usage: sse_clients.py HOST PORT TOKEN N EXPECT TIMEOUT AFTER_SEQ
"""

import http.client
import json
import sys
import threading
import time

host, port, token, n, expect, timeout, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
got = [0] * n
lat = []
lock = threading.Lock()
ready = threading.Barrier(n + 1)


def follow(i):
    # Spread over 127.0.0.2-9: the controller admits at most 64 connections per address.
    c = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(f"127.0.0.{2 + i % 8}", 0))
    c.request("GET", f"/api/events/stream?after_seq={after}", headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    r = c.getresponse()
    assert r.status == 200, r.status
    ready.wait()
    deadline = time.time() + timeout
    data = None
    while got[i] < expect and time.time() < deadline:
        line = r.fp.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and data:
            e = json.loads(data)
            data = None
            if e["kind"].startswith("fault_"):
                now = time.time() * 1000
                with lock:
                    got[i] += 1
                    lat.append(now - e["unix_ms"])
    c.close()


threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(n)]
for t in threads:
    t.start()
ready.wait()
print("ready", flush=True)
for t in threads:
    t.join()
lat.sort()
q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
print(json.dumps({"clients": n, "complete": sum(1 for g in got if g >= expect), "min_events": min(got), "expect": expect, "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": round(lat[-1], 2) if lat else None}}), flush=True)

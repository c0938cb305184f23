"""service-a of the Compose platform's demo system (Python).

POST /api/message-a counts the message in redis, asks service-b for its part and
answers with both; POST /api/error always fails (to see errors on the dashboards). GET
works on both too (what load tools send by default).
Instrumented with the OpenTelemetry Python SDK: a server span per request with client
spans for redis and service-b (trace context sent on to service-b), and the semantic
conventions' http.server.request.duration / http.client.request.duration histograms,
exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT names a collector and always on
GET /metrics for Prometheus. service.name and other resource attributes come from
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, as every OpenTelemetry SDK reads them.
"""

import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

SERVICE_B = os.environ.get("SERVICE_B_URL", "http://service-b/api/message-b")
# A call to service-b or redis that takes longer than this fails the request (502/503):
# without a deadline a frozen dependency would hold every worker thread.
TIMEOUT = float(os.environ.get("DEPENDENCY_TIMEOUT_S", "1.0"))
MAX_BODY = 64 * 1024



def collector_runs(endpoint, wait_s=5.0):
    """Whether the OTLP collector's name resolves: compose names only running containers,
    and the collector runs only with the `observability` profile. Without it, exporting
    would log a failure every few seconds for nothing."""
    host = urllib.parse.urlparse(endpoint).hostname
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.getaddrinfo(host, None)
            return True
        except (OSError, UnicodeError):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


# Docker sets the hostname to the container's short id.
resource = Resource.create({"container.id": socket.gethostname()})
readers = [PrometheusMetricReader()]
tracer_provider = TracerProvider(resource=resource)
OTLP = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
if OTLP and not collector_runs(OTLP):
    print(f"no collector at {OTLP}: metrics on /metrics only, no traces exported", flush=True)
    OTLP = ""
if OTLP:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=5000))
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
trace.set_tracer_provider(tracer_provider)

tracer = trace.get_tracer("service-a")
meter = metrics.get_meter("service-a")
# The semantic conventions' buckets for request durations (the SDK's default ones are
# meant for milliseconds), with two below 5 ms: these services answer in about one.
BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
server_duration = meter.create_histogram("http.server.request.duration", unit="s", description="Duration of HTTP server requests", explicit_bucket_boundaries_advisory=BUCKETS)
client_duration = meter.create_histogram("http.client.request.duration", unit="s", description="Duration of calls to service-b", explicit_bucket_boundaries_advisory=BUCKETS)
redis_duration = meter.create_histogram("db.client.operation.duration", unit="s", description="Duration of redis commands", explicit_bucket_boundaries_advisory=BUCKETS)

store = redis.Redis(
    host=os.environ.get("REDIS_HOST", "redis"),
    port=int(os.environ.get("REDIS_PORT", "6379")),
    socket_timeout=TIMEOUT,
    socket_connect_timeout=TIMEOUT,
)


class Failed(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def count_message():
    start = time.perf_counter()
    outcome = "ok"
    with tracer.start_as_current_span("redis INCR", kind=SpanKind.CLIENT) as span:
        span.set_attribute("db.system", "redis")
        try:
            return store.incr("messages")
        except redis.RedisError as e:
            outcome = "error"
            span.set_status(Status(StatusCode.ERROR, str(e)))
            raise Failed(503, f"redis: {e}") from e
        finally:
            redis_duration.record(time.perf_counter() - start, {"db.system": "redis", "db.operation.name": "INCR", "outcome": outcome})


def ask_service_b(message):
    start = time.perf_counter()
    status = 0
    with tracer.start_as_current_span("POST service-b", kind=SpanKind.CLIENT) as span:
        headers = {"Content-Type": "application/json"}
        propagate.inject(headers)
        req = urllib.request.Request(SERVICE_B, data=json.dumps({"message": message}).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                status = resp.status
                return json.loads(resp.read(MAX_BODY))
        except urllib.error.HTTPError as e:
            status = e.code
            span.set_status(Status(StatusCode.ERROR, f"HTTP {e.code}"))
            raise Failed(502, f"service-b answered {e.code}") from e
        except (OSError, ValueError) as e:
            span.set_status(Status(StatusCode.ERROR, str(e)))
            raise Failed(502, f"service-b: {e}") from e
        finally:
            span.set_attribute("http.response.status_code", status)
            client_duration.record(time.perf_counter() - start, {"server.address": "service-b", "http.response.status_code": status})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "service-a"

    def log_message(self, fmt, *args):  # one line per request would drown the logs under load
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise Failed(413, f"body: at most {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError as e:
            raise Failed(400, f"body: not JSON: {e}") from e

    def do_GET(self):
        if self.path == "/health":
            self.answer(200, {"status": "ok"})
        elif self.path == "/metrics":
            self.answer(200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            # A load tool's default method: GET /api/message-a is POST without a body.
            self.do_POST()

    def do_POST(self):
        routes = {"/api/message-a": self.message, "/api/error": self.error}
        handler = routes.get(self.path)
        if handler is None:
            self.answer(404, {"error": f"no route {self.path}"})
            return
        start = time.perf_counter()
        ctx = propagate.extract(dict(self.headers))
        status = 500
        with tracer.start_as_current_span(f"POST {self.path}", context=ctx, kind=SpanKind.SERVER) as span:
            try:
                status, body = handler()
            except Failed as e:
                status, body = e.status, {"error": str(e)}
                span.set_status(Status(StatusCode.ERROR, str(e)))
            span.set_attribute("http.response.status_code", status)
            self.answer(status, body)
        server_duration.record(time.perf_counter() - start, {"http.request.method": "POST", "http.route": self.path, "http.response.status_code": status})

    def message(self):
        message = str(self.body().get("message", "hello"))[:1024]
        count = count_message()
        b = ask_service_b(message)
        return 200, {"service": "service-a", "count": count, "service_b": b}

    def error(self):
        self.body()
        raise Failed(500, "this endpoint always fails (POST /api/error)")


def main():
    listen = os.environ.get("LISTEN_PORT", "80")
    server = ThreadingHTTPServer(("0.0.0.0", int(listen)), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"service-a listening on :{listen}, service-b at {SERVICE_B}", flush=True)
    try:
        server.serve_forever()
    finally:
        tracer_provider.shutdown()
        metrics.get_meter_provider().shutdown()


if __name__ == "__main__":
    main()

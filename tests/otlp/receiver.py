#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for tests/telemetry.rs: what an OpenTelemetry collector does
with `POST /v1/traces` (OTLP/HTTP, binary protobuf), decoded with the official messages of
the `opentelemetry-proto` package.

Usage: receiver.py OUT.jsonl
Listens on a free loopback port and prints it on the first line of stdout. Each span of each
export request is appended to OUT.jsonl as one JSON object: trace_id, span_id,
parent_span_id (hex, "" for a root), name, kind (SPAN_KIND_*), status (STATUS_CODE_*),
service (the resource's service.name) and attributes (strings of their values). Anything but
a well-formed ExportTraceServiceRequest of content type application/x-protobuf is answered
400, so a malformed export fails the test.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

OUT = sys.argv[1]
LOCK = threading.Lock()


def value_text(any_value):
    kind = any_value.WhichOneof("value")
    return "" if kind is None else str(getattr(any_value, kind))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_error(400, "expected POST /v1/traces, application/x-protobuf")
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # a DecodeError: not protobuf of this message
            self.send_error(400, f"not an ExportTraceServiceRequest: {e}")
            return
        lines = []
        for resource_spans in request.resource_spans:
            service = ""
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    service = value_text(attr.value)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                        "status": trace_pb2.Status.StatusCode.Name(span.status.code),
                        "service": service,
                        "attributes": {a.key: value_text(a.value) for a in span.attributes},
                    }))
        with LOCK, open(OUT, "a") as f:
            for line in lines:
                f.write(line + "\n")
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()

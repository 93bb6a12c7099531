-- The trace id of the operation (issue 16 item 3): the W3C trace id (32 hex digits) of the
-- OpenTelemetry trace the operation's spans belong to, when traces are exported
-- ([telemetry] otlp_endpoint). Beside the correlation id, not instead of it: the correlation
-- id is ours, crosses gateways in our own header and is there with tracing off; the trace id
-- is the collector's key, set by a caller's traceparent or by us. Empty without a trace; the
-- record hash covers it only when set, so the records before this migration still verify.
ALTER TABLE audit_record ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';

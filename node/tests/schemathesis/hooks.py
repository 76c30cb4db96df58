"""Schemathesis hooks for node/tests/schemathesis/run.sh."""
import schemathesis

# An import body is JSON lines: send what is generated as text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

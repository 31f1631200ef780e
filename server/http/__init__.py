"""The OpenAI-compatible HTTP API beside gRPC: one core, two thin transports.

FastAPI routes (:mod:`.routes`) over OpenAI's shapes (:mod:`.schemas`), converted to and from the
core's inputs and outcomes (:mod:`.convert`), streamed as server-sent events (:mod:`.streaming`),
errors in OpenAI's shape with the status the gRPC API would give (:mod:`.errors`), and served by
uvicorn on the gRPC server's own event loop (:mod:`.server`, started by ``server/app.py``).
"""

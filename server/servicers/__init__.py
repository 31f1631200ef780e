"""gRPC servicers: validate, delegate to the core, convert. No model logic here."""

"""hybrid-assistant's gRPC contract (generated code in ``v1``) and its Python client.

The client depends only on grpcio and protobuf, so other services can import it without torch.
"""

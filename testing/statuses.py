"""The gRPC statuses the contract documents, which the fuzzer and the chaos scenarios hold every
answer to (kept apart from fuzz.py, which needs hypothesis, so that the scenarios do not)."""

from __future__ import annotations

import grpc

Code = grpc.StatusCode

#: Statuses the contract documents. UNAVAILABLE is allowed only while warming up (see
#: :func:`hybrid_assistant.testing.fuzz.allowed`).
DOCUMENTED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
        Code.FAILED_PRECONDITION,
        Code.RESOURCE_EXHAUSTED,
        Code.UNAUTHENTICATED,
        Code.OUT_OF_RANGE,
    }
)
#: What the details of a warming-up server's UNAVAILABLE say.
WARMING_UP = "still loading"

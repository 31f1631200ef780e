"""server.errors: one table maps every domain error to its status, with nothing registered elsewhere."""

from __future__ import annotations

import inspect
import subprocess
import sys
from types import ModuleType

import grpc
import pytest

from hybrid_assistant.adapters import errors as adapter_errors
from hybrid_assistant.retrieval import errors as retrieval_errors
from hybrid_assistant.server import errors
from hybrid_assistant.server.engines import errors as engine_errors

Code = grpc.StatusCode
EXPECTED = {
    adapter_errors.AdapterNotFoundError: Code.NOT_FOUND,
    adapter_errors.AdapterValidationError: Code.INVALID_ARGUMENT,
    adapter_errors.UnsafeAdapterPathError: Code.INVALID_ARGUMENT,
    retrieval_errors.InvalidQueryError: Code.INVALID_ARGUMENT,
    retrieval_errors.EmptyIndexError: Code.FAILED_PRECONDITION,
    retrieval_errors.IndexLockedError: Code.FAILED_PRECONDITION,
    retrieval_errors.IncompatibleIndexError: Code.FAILED_PRECONDITION,
    retrieval_errors.CorruptIndexError: Code.FAILED_PRECONDITION,
    retrieval_errors.EmbedderError: Code.FAILED_PRECONDITION,
    retrieval_errors.SharedSchemaError: Code.FAILED_PRECONDITION,  # as IncompatibleIndexError, its base
    retrieval_errors.SharedStoreUnavailableError: Code.UNAVAILABLE,
    engine_errors.QueueFullError: Code.RESOURCE_EXHAUSTED,
    engine_errors.EngineStoppedError: Code.UNAVAILABLE,
}
# Base classes are never raised themselves; a failed forward step is a server fault (INTERNAL).
UNMAPPED = {adapter_errors.AdapterError, retrieval_errors.RetrievalError, engine_errors.StepFailedError}


def _exceptions(module: ModuleType) -> set[type[BaseException]]:
    return {
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
    }


def _instance(exc_type: type[BaseException]) -> BaseException:
    if exc_type is adapter_errors.AdapterValidationError:
        return exc_type("/adapters/x", ["rank 99 exceeds 64"])
    return exc_type("what went wrong")


@pytest.mark.parametrize("exc_type", sorted(EXPECTED, key=lambda t: t.__name__), ids=lambda t: t.__name__)
def test_each_domain_error_has_its_status_and_keeps_its_message(exc_type: type[BaseException]) -> None:
    exc = _instance(exc_type)
    assert errors.status_for(exc) == (EXPECTED[exc_type], str(exc))


def test_every_domain_error_is_in_the_table_or_deliberately_internal() -> None:
    # A new exception class in one of the error modules must be given a status here.
    declared = _exceptions(adapter_errors) | _exceptions(retrieval_errors) | _exceptions(engine_errors)
    assert declared == set(EXPECTED) | UNMAPPED


def test_a_failed_step_is_internal_with_a_generic_message() -> None:
    code, message = errors.status_for(engine_errors.StepFailedError("the engine step failed: KeyError"))
    assert code is Code.INTERNAL and message == "internal error (see the server log)"


def test_the_table_needs_no_other_module_imported_first() -> None:
    # Retrieval errors used to be registered when server.knowledge was imported: a process that
    # had not imported it mapped InvalidQueryError to INTERNAL.
    script = (
        "import sys\n"
        "from hybrid_assistant.server.errors import status_for\n"
        "from hybrid_assistant.retrieval.errors import InvalidQueryError\n"
        "from hybrid_assistant.server.engines.errors import QueueFullError\n"
        "assert 'hybrid_assistant.server.knowledge' not in sys.modules\n"
        "assert 'hybrid_assistant.server.engines.scheduler' not in sys.modules\n"
        "print(status_for(InvalidQueryError('q'))[0].name, status_for(QueueFullError('full'))[0].name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"]


def test_service_errors_carry_their_own_codes() -> None:
    assert errors.status_for(errors.NotFound("adapter 'x' is not loaded")) == (
        Code.NOT_FOUND,
        "adapter 'x' is not loaded",
    )
    assert not hasattr(errors, "register_error")  # one table, nothing registered at import time

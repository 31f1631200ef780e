"""An acknowledged RecordFeedback survives kill -9 of the server process, and so do experiments."""

from __future__ import annotations

from pathlib import Path

from hybrid_assistant.client import AssistantClient
from hybrid_assistant.process import ServerProcess
from hybrid_assistant.requests import experiment_arm


def serve(model: Path, data: Path, log: Path) -> ServerProcess:
    env = {
        "HA_MODEL_PATH": str(model),
        "HA_DATA_DIR": str(data),
        "HA_THREADS": "1",
        "HA_KNOWLEDGE": "false",
        "HA_MAX_TOTAL_TOKENS": "512",
        "HA_MAX_PROMPT_TOKENS": "384",
    }
    return ServerProcess(env=env, log=log).wait_ready(timeout=180)


def test_feedback_acknowledged_before_kill_9_is_still_there(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(tiny_model_dir, data, tmp_path / "first.log")
    try:
        with AssistantClient(server.target, timeout=60) as client:
            client.create_experiment("durable", [experiment_arm("a", control=True), experiment_arm("b")])
            replies = [
                client.generate("Tell me a story.", experiment="durable", subject_key=f"u{i}", max_tokens=2)
                for i in range(5)
            ]
            # Feedback right after the answer, then kill -9 the moment it is acknowledged.
            last = replies[-1]
            assert client.record_feedback(last.request_id, "thumbs", 1).duplicate is False
            server.proc.kill()
            server.proc.wait(30)
    finally:
        server.stop()

    server = serve(tiny_model_dir, data, tmp_path / "second.log")
    try:
        with AssistantClient(server.target, timeout=60) as client:
            assert [e.name for e in client.list_experiments()] == ["durable"]
            rows = {r.request_id: r for r in client.export_request_log("durable")}
            assert last.request_id in rows
            assert dict(rows[last.request_id].feedback) == {"thumbs": 1.0}
            assert rows[last.request_id].arm == last.arm and rows[last.request_id].subject_key == "u4"
            # The same call again is recognised as a duplicate after the restart.
            assert client.record_feedback(last.request_id, "thumbs", 1).duplicate is True
    finally:
        server.stop()

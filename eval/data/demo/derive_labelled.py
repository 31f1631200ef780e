"""Write the ``labelled-lines`` style files from the ``json-answer`` ones (run from anywhere).

The second demo format, different in kind from JSON: two plain-text lines with fixed labels,
no braces, no quoting, and a confidence in words::

    Answer: Canberra
    Confidence: high

The questions and answers are those of ``style_train.jsonl`` and ``style_exemplars.jsonl``; only
the form changes, so the two formats are measured on the same content. The confidence words
come from the JSON confidence by fixed cut points (0.9 and above: high; 0.7 and above: medium;
below: low), set before any adapter was trained in this format.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = {
    "name": "labelled-lines",
    "description": (
        "The assistant replies with exactly two lines and nothing else. The first line is "
        "'Answer: ' followed by a short answer (at most 12 words); the second line is "
        "'Confidence: ' followed by one word, high, medium or low, lower for harder or "
        "uncertain questions. No JSON, no quotes, no extra sentences."
    ),
    "regex": r"Answer: [^\n]{1,120}\nConfidence: (high|medium|low)",
    "max_chars": 200,
}


def confidence_word(value: float) -> str:
    return "high" if value >= 0.9 else "medium" if value >= 0.7 else "low"


def labelled(json_output: str) -> str:
    obj = json.loads(json_output)
    return f"Answer: {obj['answer']}\nConfidence: {confidence_word(float(obj['confidence']))}"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def derived() -> dict[str, str]:
    """File name -> content, for every file this script writes."""
    train = []
    for row in _lines(HERE / "style_train.jsonl"):
        user, assistant = row["messages"]
        train.append({"messages": [user, {"role": "assistant", "content": labelled(assistant["content"])}]})
    exemplars = [
        {"question": row["question"], "output": labelled(row["output"])}
        for row in _lines(HERE / "style_exemplars.jsonl")
    ]
    return {
        "labelled_train.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train),
        "labelled_exemplars.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in exemplars),
        "labelled_spec.json": json.dumps(SPEC, indent=2, ensure_ascii=False) + "\n",
    }


if __name__ == "__main__":
    for name, content in derived().items():
        (HERE / name).write_text(content, encoding="utf-8")
        print(f"wrote {HERE / name}")

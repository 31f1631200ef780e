"""Retrieval benchmark: ingest rate, query latency, approximate-index recall/speed, search modes.

    python bench/retrieval.py [--quick] [--out bench/results/retrieval.json]

Sections (each printed as a table, all written to one JSON file):

1. ingest: chunks/s of ``KnowledgeBase.ingest`` against the embedder alone on the same chunks
   (the ceiling). Target: ingest >= 80% of the embedder-alone rate.
2. query latency p50/p99 at 10k and 100k chunks, query embedding included, per search mode.
   Embedding 100k chunks with MiniLM on a small CPU takes over an hour, so the corpus texts are
   synthetic and its vectors are synthetic (see 3); every *query* is embedded by the real model.
   Target: p50 <= 15 ms at 100k chunks.
3. IVF and HNSW on 1M synthetic 384-d unit vectors: recall@10 against exact search and
   single-query queries/s against exact. Target: recall@10 >= 0.95 at >= 5x exact queries/s.
   The vectors are anchored on real MiniLM embeddings: 1,000 docstring paragraphs of the
   installed Python packages are embedded; each synthetic vector lies between one of them and
   one of its 10 nearest neighbours, plus Gaussian noise shaped like the real embeddings'
   covariance (sigma 0.75), renormalised. Their neighbour-similarity profile (top-1, top-10,
   random pair on a 1k sample) is printed next to the real one's, which it matches closely.
4. dense vs lexical vs hybrid recall@5 with the real embedder on a synthetic labelled set (and on
   the demo knowledge base under eval/data/demo/ when it is present).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import platform
import random
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hybrid_assistant.retrieval import (  # noqa: E402
    Document,
    KnowledgeBase,
    RetrievalSettings,
    SentenceTransformerEmbedder,
    lexical,
    load_documents,
)
from hybrid_assistant.retrieval.vector_index import VectorIndex  # noqa: E402

DIM = 384
PROFILE_SAMPLE = 1000
ALL_SECTIONS = ("ingest", "latency", "ann", "modes")
# Common English words: about one MiniLM token each, like real prose.
_WORD_TEXT = """
the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so no what can more about up
out said time people year water river city market bank train bridge island harbour festival lantern
metal mill council school music church castle garden forest mountain valley road station ferry
museum library history trade fishing wool salt copper glass stone timber weather storm summer winter
north south east west old new small large early late first second built opened closed founded named
known famous local public private annual weekly daily between during after before under over across
along around near
"""
WORDS = _WORD_TEXT.split()


def banner(title: str) -> None:
    print(f"\n== {title}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def percentile_ms(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


# ---------------------------------------------------------------------------- synthetic data


def pseudo_word(rng: random.Random) -> str:
    syllables = ["ka", "lo", "ven", "dra", "mi", "sor", "tel", "qua", "rin", "bel", "os", "thar", "ul", "zen"]
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))


def english_text(rng: random.Random, chars: int) -> str:
    """Sentences of common words (about one token each)."""
    sentences: list[str] = []
    length = 0
    while length < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def zipf_corpus(count: int, words_per_text: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Texts mixing common words with a 20k-word Zipfian vocabulary (so term frequencies look
    like real text to BM25); also returns each text's rare words, to build queries from."""
    rng = random.Random(seed)
    vocabulary = sorted({pseudo_word(rng) for _ in range(40_000)})[:20_000]
    rng.shuffle(vocabulary)
    generator = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    rare = generator.choice(len(vocabulary), size=(count, words_per_text), p=weights / weights.sum())
    common = generator.integers(0, len(WORDS), size=(count, words_per_text))
    use_rare = generator.random((count, words_per_text)) < 0.35
    texts, rare_words = [], []
    for row in range(count):
        words = [
            vocabulary[r] if u else WORDS[c]
            for r, c, u in zip(rare[row], common[row], use_rare[row], strict=True)
        ]
        sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
        texts.append(" ".join(sentences))
        rare_words.append([vocabulary[r] for r, u in zip(rare[row], use_rare[row], strict=True) if u])
    return texts, rare_words


def real_seed_vectors(
    embedder: SentenceTransformerEmbedder, count: int
) -> tuple[np.ndarray, dict[str, float]]:
    """MiniLM embeddings of ``count`` docstring paragraphs of the installed packages (real
    English prose, available offline), and their nearest-neighbour similarity profile."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    paragraphs: set[str] = set()
    for path in sorted(purelib.rglob("*.py"))[:20_000]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError, OSError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, kinds) else None
            for paragraph in (doc or "").split("\n\n"):
                text = " ".join(paragraph.split())
                letters = sum(c.isalpha() or c == " " for c in text)
                if 150 < len(text) < 800 and letters > 0.9 * len(text) and ":param" not in text:
                    paragraphs.add(text)
    chosen = random.Random(0).sample(sorted(paragraphs), min(count, len(paragraphs)))
    vectors = embedder.embed(chosen)
    # Neighbour similarities grow with sample size: compare equal-sized samples.
    return vectors, similarity_profile(vectors[:PROFILE_SAMPLE])


def similarity_profile(vectors: np.ndarray) -> dict[str, float]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -2.0)
    ranked = -np.sort(-sims, axis=1)
    off_diagonal = sims[sims > -2.0]
    return {
        "top1": float(ranked[:, 0].mean()),
        "top10": float(ranked[:, 9].mean()),
        "random_pair": float(off_diagonal.mean()),
    }


def seeded_vectors(count: int, seeds: np.ndarray, sigma: float = 0.75, seed: int = 0) -> np.ndarray:
    """Unit vectors along the real embeddings' manifold: a random point between a real embedding
    and one of its 10 nearest real neighbours, plus Gaussian noise with the real embeddings'
    covariance (their principal axes and spreads) scaled by ``sigma``. No discrete clusters, so
    IVF cells cut through the data as they do on real corpora."""
    rng = np.random.default_rng(seed)
    sims = seeds @ seeds.T
    np.fill_diagonal(sims, -2.0)
    neighbours = np.argsort(-sims, axis=1)[:, :10]
    _, spreads, axes = np.linalg.svd(seeds - seeds.mean(axis=0), full_matrices=False)
    scale = (spreads / np.sqrt(len(seeds))).astype(np.float32)
    axes = axes.astype(np.float32)
    out = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):
        rows = min(100_000, count - start)
        first = rng.integers(0, len(seeds), rows)
        second = neighbours[first, rng.integers(0, neighbours.shape[1], rows)]
        weight = rng.random((rows, 1), dtype=np.float32)
        noise = (rng.standard_normal((rows, len(scale)), dtype=np.float32) * scale) @ axes
        out[start : start + rows] = (
            weight * seeds[first] + (1 - weight) * seeds[second] + np.float32(sigma) * noise
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


class CorpusVectorEmbedder:
    """Bench-only embedder: hands out precomputed corpus vectors while ``corpus_mode`` is on (for
    ingest), and embeds with the real model otherwise (queries). Same name and dimension as the
    real model."""

    def __init__(self, real: SentenceTransformerEmbedder, vectors: np.ndarray) -> None:
        self.real = real
        self.vectors = vectors
        self.next = 0
        self.corpus_mode = True

    @property
    def name(self) -> str:
        return self.real.name

    @property
    def dimension(self) -> int:
        return self.real.dimension

    def embed(self, texts: list[str]) -> np.ndarray:
        if not self.corpus_mode:
            return self.real.embed(texts)
        out = self.vectors[self.next : self.next + len(texts)]
        self.next += len(texts)
        return out


# ---------------------------------------------------------------------------- 1. ingest


def bench_ingest(embedder: SentenceTransformerEmbedder, documents: int, rounds: int) -> dict[str, Any]:
    rng = random.Random(1)
    docs = [Document(f"doc{i}", english_text(rng, 2300)) for i in range(documents)]
    settings = RetrievalSettings()
    with tempfile.TemporaryDirectory() as tmp:
        probe = KnowledgeBase.open(Path(tmp), embedder, settings)
        texts = [c.text for d in docs for c in probe._chunker.chunk(d.text)]
        probe.close()
    embedder.embed(texts[:32])  # warm-up
    alone, ingest = [], []
    for _ in range(rounds):  # interleaved, best of each: the box is shared, so noise is one-sided
        start = time.perf_counter()
        for s in range(0, len(texts), settings.embed_batch_size * 8):
            embedder.embed(texts[s : s + settings.embed_batch_size * 8])
        alone.append(len(texts) / (time.perf_counter() - start))
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase.open(Path(tmp), embedder, settings)
            start = time.perf_counter()
            summary = kb.ingest(docs)
            ingest.append(summary.chunks_added / (time.perf_counter() - start))
            kb.close()
    result = {
        "documents": documents,
        "chunks": len(texts),
        "mean_chunk_chars": float(np.mean([len(t) for t in texts])),
        "embedder_alone_chunks_per_s": max(alone),
        "ingest_chunks_per_s": max(ingest),
        "ratio": max(ingest) / max(alone),
        "rounds": {"embedder_alone": alone, "ingest": ingest},
        "target_ratio": 0.8,
    }
    banner("1. ingest (real embedder, default settings)")
    table(
        ["chunks", "embedder alone chunks/s", "ingest chunks/s", "ratio", "target"],
        [[len(texts), max(alone), max(ingest), result["ratio"], ">= 0.80"]],
    )
    return result


# ---------------------------------------------------------------------------- 2. latency


def build_synthetic_kb(directory: Path, embedder: CorpusVectorEmbedder, texts: Sequence[str]) -> float:
    count = len(texts)
    docs = [Document(f"c{i}", text, {"shard": str(i % 10)}) for i, text in enumerate(texts)]
    embedder.corpus_mode, embedder.next = True, 0
    settings = RetrievalSettings(chunk_size=800)
    start = time.perf_counter()
    with KnowledgeBase.open(directory, embedder, settings) as kb:
        summary = kb.ingest(docs)
    assert summary.chunks_added == count, summary
    embedder.corpus_mode = False
    return time.perf_counter() - start


def best_round(measure: Callable[[], list[float]], rounds: int) -> dict[str, float]:
    """p50/p99 (ms) of the round with the lowest p50. The box is shared (other jobs, an LLM):
    contention only ever adds time, so the quietest round is the closest to the code's cost."""
    results = []
    for _ in range(rounds):
        samples = measure()
        results.append({"p50_ms": percentile_ms(samples, 50), "p99_ms": percentile_ms(samples, 99)})
    best = min(results, key=lambda r: r["p50_ms"])
    return {**best, "rounds_p50_ms": [r["p50_ms"] for r in results]}  # type: ignore[dict-item]


def timed(call: Callable[[str], object], queries: Sequence[str]) -> list[float]:
    for query in queries[:3]:
        call(query)
    samples = []
    for query in queries:
        start = time.perf_counter()
        call(query)
        samples.append(time.perf_counter() - start)
    return samples


def fts5_top5(kb: KnowledgeBase, query: str) -> list[tuple[int, float]]:
    with kb._docstore.reading() as conn:
        return lexical.search(conn, query, 5)


def memory_top5(kb: KnowledgeBase, query: str) -> list[int]:
    return [i for i, _ in kb._docstore.lexical.search(lexical.query_words(query), 5)]


def bench_latency(
    real: SentenceTransformerEmbedder, seeds: np.ndarray, sizes: Sequence[int], queries: int, rounds: int
) -> dict[str, Any]:
    rng = random.Random(3)
    corpus, rare_words = zipf_corpus(max(sizes), words_per_text=64, seed=2)
    # A question: a few common words and two rarer words from one chunk of the corpus.
    texts = []
    for _ in range(queries):
        rare = rare_words[rng.randrange(min(sizes))] or ["lantern"]
        texts.append(" ".join([*rng.sample(WORDS, 4), *rng.sample(rare, min(2, len(rare)))]) + "?")
    results: dict[str, Any] = {
        "corpus": "synthetic texts (64 words, one chunk each; common words + Zipfian 20k vocabulary) "
        "with synthetic real-anchored vectors (as in section 3); queries embedded by the real model",
        "queries": queries,
        "rounds": rounds,
        "embed_only": best_round(partial(timed, lambda q: real.embed([q]), texts), rounds),
        "configs": [],
    }
    rows = []
    for size in sizes:
        embedder = CorpusVectorEmbedder(real, seeded_vectors(size, seeds, seed=size))
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            build_s = build_synthetic_kb(directory, embedder, corpus[:size])
            for index_type in ("flat", "hnsw") if size == max(sizes) else ("flat",):
                settings = RetrievalSettings(index_type=index_type)
                start = time.perf_counter()
                kb = KnowledgeBase.open(directory, embedder, settings)
                config: dict[str, Any] = {
                    "chunks": size,
                    "index_type": index_type,
                    "ingest_s": build_s,
                    "open_s": time.perf_counter() - start,
                    "bytes_on_disk": kb.stats().bytes_on_disk,
                }
                for mode in ("dense", "lexical", "hybrid"):
                    search = partial(kb.search, top_k=5, mode=mode)
                    config[mode] = best_round(partial(timed, search, texts), rounds)
                    rows.append([size, index_type, mode, config[mode]["p50_ms"], config[mode]["p99_ms"]])
                # The obvious alternative, in the same run: the same BM25 query on FTS5 (what
                # lexical search ran before the in-memory index), and whether the two agree.
                config["lexical_fts5"] = best_round(partial(timed, partial(fts5_top5, kb), texts), rounds)
                p50, p99 = config["lexical_fts5"]["p50_ms"], config["lexical_fts5"]["p99_ms"]
                rows.append([size, index_type, "lexical, FTS5 scan", p50, p99])
                config["lexical_same_top5_as_fts5"] = float(
                    np.mean([memory_top5(kb, q) == [i for i, _ in fts5_top5(kb, q)] for q in texts])
                )
                kb.close()
                # Reopen: now the saved index matches the docstore and only has to be read.
                start = time.perf_counter()
                KnowledgeBase.open(directory, embedder, settings).close()
                config["reopen_s"] = time.perf_counter() - start
                results["configs"].append(config)
    banner(f"2. query latency, top_k=5, query embedding included (ms; best of {rounds} rounds)")
    embed = results["embed_only"]
    print(f"   query embedding alone: p50 {embed['p50_ms']:.1f}, p99 {embed['p99_ms']:.1f}")
    table(["chunks", "index", "mode", "p50 ms", "p99 ms"], rows)
    table(
        ["chunks", "index", "ingest s (no embedding)", "first open s", "reopen s", "MB on disk"],
        [
            [
                c["chunks"],
                c["index_type"],
                c["ingest_s"],
                c["open_s"],
                c["reopen_s"],
                c["bytes_on_disk"] / 2**20,
            ]
            for c in results["configs"]
        ],
    )
    print(
        "   first open of hnsw = building the graph from the stored embeddings; target: p50 <= 15 ms at 100k"
    )
    return results


# ---------------------------------------------------------------------------- 3. ANN


def single_query_qps(search: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    start = time.perf_counter()
    for row in range(len(queries)):
        search(queries[row : row + 1])
    return len(queries) / (time.perf_counter() - start)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def bench_ann(
    seeds: np.ndarray, real_profile: dict[str, float], count: int, queries: int, exact_single: int
) -> dict[str, Any]:
    start = time.perf_counter()
    data = seeded_vectors(count + queries, seeds, seed=7)
    base, query = data[:count], data[count:]
    ids = np.arange(count, dtype=np.int64)
    generate_s = time.perf_counter() - start
    exact = VectorIndex.build(DIM, RetrievalSettings(index_type="flat"), [(ids, base)])
    start = time.perf_counter()
    truth_scores, truth = exact.search(query, 10)
    exact_batch_qps = queries / (time.perf_counter() - start)
    exact_qps = single_query_qps(lambda q: exact.search(q, 10), query[:exact_single])
    result: dict[str, Any] = {
        "vectors": count,
        "queries": queries,
        "data": f"between {len(seeds)} real MiniLM embeddings and their neighbours + covariance noise",
        "profile_1k_sample": {
            "real": real_profile,
            "synthetic": similarity_profile(base[: min(PROFILE_SAMPLE, len(seeds))]),
        },
        "neighbour_cosine": {
            "top1": float(truth_scores[:, 0].mean()),
            "top10": float(truth_scores[:, 9].mean()),
        },
        "generate_s": generate_s,
        "exact_single_qps": exact_qps,
        "exact_batch_qps": exact_batch_qps,
        "indexes": [],
    }
    rows = [["flat (exact)", "-", "-", 1.0, exact_qps, 1.0]]
    sweeps: list[tuple[str, RetrievalSettings, str, list[int]]] = [
        ("ivf", RetrievalSettings(index_type="ivf", ivf_train_threshold=1), "ivf_nprobe", [8, 16, 32, 64]),
        ("hnsw", RetrievalSettings(index_type="hnsw"), "hnsw_ef_search", [32, 64, 128, 256]),
    ]
    for kind, settings, knob, values in sweeps:
        start = time.perf_counter()
        index = VectorIndex.build(DIM, settings, [(ids, base)])
        build_s = time.perf_counter() - start
        entry: dict[str, Any] = {
            "index_type": kind,
            "build_s": build_s,
            "build_key": settings.index_build_key(),
        }
        entry["points"] = []
        for value in values:
            index.settings = settings.model_copy(update={knob: value})
            _, found = index.search(query, 10)
            recall = recall_at_10(found, truth)
            qps = single_query_qps(partial(index.search, k=10), query)
            entry["points"].append(
                {knob: value, "recall_at_10": recall, "single_qps": qps, "speedup": qps / exact_qps}
            )
            rows.append([kind, f"{knob}={value}", f"{build_s:.0f}", recall, qps, qps / exact_qps])
        passing = [p for p in entry["points"] if p["recall_at_10"] >= 0.95 and p["speedup"] >= 5]
        entry["meets_target"] = bool(passing)
        entry["best_passing"] = max(passing, key=lambda p: p["speedup"]) if passing else None
        result["indexes"].append(entry)
        del index
    banner(f"3. approximate search on {count:,} synthetic vectors ({queries} queries, one at a time)")
    real, synthetic = result["profile_1k_sample"]["real"], result["profile_1k_sample"]["synthetic"]
    print(
        "   similarity profile of 1k vectors (top-1 / top-10 neighbour, random pair): "
        f"real {real['top1']:.2f} / {real['top10']:.2f} / {real['random_pair']:.2f}, "
        f"synthetic {synthetic['top1']:.2f} / {synthetic['top10']:.2f} / {synthetic['random_pair']:.2f}"
    )
    print(
        f"   at {count:,} vectors, mean cosine of the exact top-1 {result['neighbour_cosine']['top1']:.2f}, "
        f"top-10 {result['neighbour_cosine']['top10']:.2f}"
    )
    table(["index", "setting", "build s", "recall@10", "queries/s", "x exact"], rows)
    print("   target: recall@10 >= 0.95 at >= 5x exact queries/s")
    return result


# ---------------------------------------------------------------------------- 4. modes


def labelled_set(rng: random.Random) -> tuple[list[Document], list[tuple[str, str]]]:
    """Fictional entities, one document each, and questions naming (or only describing) them."""
    kinds = [
        "mineral",
        "festival",
        "bird",
        "ship",
        "bridge",
        "painting",
        "river",
        "cheese",
        "dance",
        "engine",
    ]
    places = [pseudo_word(rng).capitalize() for _ in range(12)]
    uses = [
        ("making bicycle frames", "building lightweight bikes"),
        ("curing fevers", "treating high temperatures"),
        ("dyeing wool red", "colouring sheep's yarn crimson"),
        ("predicting storms", "forecasting bad weather"),
        ("sealing boat hulls", "waterproofing ships"),
        ("polishing silver", "cleaning tarnished cutlery"),
        ("brewing tea", "making a hot infusion"),
        ("lighting lamps", "fuelling lanterns"),
    ]
    docs, questions = [], []
    for i in range(120):
        name = pseudo_word(rng).capitalize()
        kind, place, (use, paraphrase) = rng.choice(kinds), rng.choice(places), rng.choice(uses)
        year = rng.randint(1700, 1990)
        text = (
            f"{name} is a {kind} from {place}. It was first recorded in {year}. "
            f"People there value it for {use}. " + english_text(rng, 300)
        )
        docs.append(Document(f"e{i}", text, {"kind": kind}))
        questions.append((f"In which year was {name} first recorded?", f"e{i}"))
        questions.append((f"Which {kind} from {place} is known for {paraphrase}?", f"e{i}"))
    return docs, questions


def recall_at_5(kb: KnowledgeBase, questions: Sequence[tuple[str, str]], mode: str) -> float:
    hits = 0
    for question, expected in questions:
        found = {h.document_id for h in kb.search(question, top_k=5, mode=mode)}  # type: ignore[arg-type]
        hits += expected in found
    return hits / len(questions)


def demo_set() -> tuple[list[Document], list[tuple[str, str]]] | None:
    demo = REPO / "eval" / "data" / "demo"
    if not (demo / "kb").is_dir() or not (demo / "facts.jsonl").is_file():
        return None
    docs = [
        Document(d.id.removesuffix(".md"), d.text, d.metadata, d.source)
        for d in load_documents([demo / "kb"]).documents
    ]
    facts = [
        json.loads(line) for line in (demo / "facts.jsonl").read_text(encoding="utf-8").splitlines() if line
    ]
    return docs, [(f["test_question"], f["doc_id"]) for f in facts]


def bench_modes(embedder: SentenceTransformerEmbedder) -> dict[str, Any]:
    sets: dict[str, tuple[list[Document], list[tuple[str, str]]]] = {
        "synthetic": labelled_set(random.Random(4))
    }
    demo = demo_set()
    if demo is not None:
        sets["demo (eval/data/demo)"] = demo
    result: dict[str, Any] = {}
    rows = []
    for label, (docs, questions) in sets.items():
        with tempfile.TemporaryDirectory() as tmp, KnowledgeBase.open(Path(tmp), embedder) as kb:
            summary = kb.ingest(docs)
            scores = {mode: recall_at_5(kb, questions, mode) for mode in ("dense", "lexical", "hybrid")}
        result[label] = {
            "documents": len(docs),
            "chunks": summary.chunks_added,
            "questions": len(questions),
            **scores,
        }
        rows.append([label, len(docs), summary.chunks_added, len(questions), *scores.values()])
    banner("4. recall@5 by search mode (document-level, real embedder)")
    table(["set", "docs", "chunks", "questions", "dense", "lexical", "hybrid"], rows)
    return result


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or two instead of ~15")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrieval.json")
    parser.add_argument("--sections", default=",".join(ALL_SECTIONS), help="comma-separated subset")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sections = set(args.sections.split(","))
    started = time.perf_counter()
    embedder = SentenceTransformerEmbedder()
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "embedder": embedder.name,
    }
    print(
        f"retrieval benchmark ({'quick' if args.quick else 'full'}); {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f} (the box may be shared: numbers are noisy)"
    )

    def run(name: str, measure: Callable[[], dict[str, Any]]) -> None:
        load_before, start = os.getloadavg()[0], time.perf_counter()
        results[name] = measure()
        results[name]["run"] = {
            "seconds": time.perf_counter() - start,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    if "ingest" in sections:
        run("ingest", partial(bench_ingest, embedder, 8 if args.quick else 90, 1 if args.quick else 2))
    if sections & {"latency", "ann"}:
        seeds, real_profile = real_seed_vectors(embedder, 400 if args.quick else 1000)
        results["real_embedding_seeds"] = {"count": len(seeds), "profile": real_profile}
    if "latency" in sections:
        sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
        queries, rounds = (30, 2) if args.quick else (100, 3)
        run("latency", partial(bench_latency, embedder, seeds, sizes, queries, rounds))
    if "ann" in sections:
        count, queries, exact_single = (100_000, 200, 20) if args.quick else (1_000_000, 500, 30)
        run("ann", partial(bench_ann, seeds, real_profile, count, queries, exact_single))
    if "modes" in sections:
        run("modes", partial(bench_modes, embedder))
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists() and sections != set(ALL_SECTIONS):
        # A partial run (say, re-measuring one section on a quieter machine) updates the file.
        previous = json.loads(args.out.read_text(encoding="utf-8"))
        if previous.get("quick") == args.quick:
            results = {
                **previous,
                **{k: v for k, v in results.items() if k in sections | {"real_embedding_seeds"}},
            }
            results.setdefault("partial_runs", []).append(sorted(sections))
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

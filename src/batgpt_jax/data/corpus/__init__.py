"""The embedded default corpus: project-generated English and Chinese prose for smoke runs."""

import gzip
import pathlib

# Resolved from __file__ so it works from a source checkout and from an installed package.
DEFAULT_CORPUS_PATH = pathlib.Path(__file__).resolve().parent / "default_corpus.txt.gz"


def read_default_documents() -> list[str]:
  """The shipped corpus as a list of documents (paragraphs separated by blank lines)."""
  with gzip.open(DEFAULT_CORPUS_PATH, "rt", encoding="utf-8") as f:
    text = f.read()
  return [doc.strip() for doc in text.split("\n\n") if doc.strip()]

"""User code for the hello-world example: sent to the cluster by import path."""

from __future__ import annotations

import os
from collections import Counter


def word_counts(text: str) -> dict[str, int]:
    print(f"{os.environ.get('GREETING', '?')} from worker pid {os.getpid()}")
    words = [w.strip(".,").lower() for w in text.split()]
    return dict(Counter(words).most_common(3))


class Tokenizer:
    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.calls = 0

    def tokenize(self, text: str) -> list[str]:
        self.calls += 1
        return (text.lower() if self.lowercase else text).split()

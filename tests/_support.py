"""Helpers shared by the test modules: a loopback HTTP server for download tests, an unused port, a tiny BERT."""
from __future__ import annotations

import functools
import hashlib
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def sha256_bytes(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def unused_port() -> int:
    """A loopback port that nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves a folder quietly and counts the requests it answers."""

    requests: list

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1, serving ``folder``, at ``url``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.requests: list[str] = []
        handler = type("Handler", (CountingHandler,), {"requests": self.requests})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0),
                                           functools.partial(handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.running = True

    def serve(self, name: str, payload: bytes) -> str:
        """Publish ``payload`` as ``name``; return its sha256."""
        (self.folder / name).write_bytes(payload)
        return sha256_bytes(payload)

    def stop(self):
        if self.running:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self.running = False


def tiny_bert(vocab_size: int, seed: int = 0):
    """A 2-layer, 32-wide random BERT encoder (seeded): fast stand-in for a real encoder in tests."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37)
    return BertModel(config, add_pooling_layer=False)


#: a few (query, ad) texts for the cross-encoder and lean-scorer tests
QUERIES = ["cheap flights", "running shoes for women", "pizza", "used cars near me boston", "hotel"]
ADS = [
    "Cheap flights to Paris Book now and save up to 40% on your next trip",
    "Women's running shoes Free delivery on all orders",
    "Pizza delivery Order online",
    "Used cars for sale Thousands of certified cars near you in Boston, Massachusetts and beyond",
    "Hotels",
]


#: the toy vocabulary of the text tests' random sentences: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, words 5..59
PAD, CLS, SEP, MASK, VOCAB = 0, 2, 3, 4, 60
SPECIAL = frozenset({PAD, 1, CLS, SEP, MASK})


def labelled_toy_text(n: int, seed: int, lengths=(2, 8)):
    """``(text, labels)``: ``n`` random sentences ``[CLS] w ... w [SEP]`` of ``lengths[0]`` to ``lengths[1] - 1``
    words from the toy vocabulary (seeded), and ``n`` random binary labels drawn after them."""
    import numpy as np

    from kdtutorial.text.tokens import TokenizedText

    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(*lengths)).tolist(), SEP] for _ in range(n)]
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=SPECIAL), rng.integers(0, 2, n)

"""Argument checks shared by the package's loaders and builders (the notebooks' parameters: course.parameters)."""
from __future__ import annotations


def check_choice(name: str, value, allowed: tuple) -> None:
    """Raise ``ValueError`` naming ``name``, the value and the allowed ones unless ``value in allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_sentences(sentences, argument: str = "sentences") -> list:
    """``sentences`` as a list of str; a single string or a non-str item raises ``TypeError`` naming ``argument``
    (and the position of the first bad item)."""
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"{argument} must be a sequence of strings, not one string")
    sentences = list(sentences)
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(f"{argument}[{i}] is a {type(sentence).__name__}, not a str")
    return sentences

"""Models built from the layers of :mod:`minitransformer.nn`."""

from minitransformer.coref.models.coref import (
    CorefConfig,
    CorefModel,
    PointerHead,
    PronounError,
    Resolution,
    SentenceError,
    choose_pronoun,
    resolve,
)

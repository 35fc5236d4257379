"""Backends: where the model runs. ``remote`` (OpenAI-compatible servers), ``local`` (in-process
transformers) and ``scripted`` (replayed outputs for tests and docs) all end in the same parser."""

from .base import Backend, GenerationOptions
from .scripted import Reply, ScriptedBackend

__all__ = ["Backend", "GenerationOptions", "Reply", "ScriptedBackend"]

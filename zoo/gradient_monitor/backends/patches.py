"""Methods wrapped on the user's objects (not their classes) and put back afterwards, as
zoo.gradient_monitor.hooks does on TensorFlow."""
from __future__ import annotations


class Patches:
    """The wrapped methods of a few objects; :meth:`remove` restores each (an instance attribute
    the user had set included)."""

    def __init__(self):
        self._originals: list = []  # (object, name, the user's instance attribute or None)

    def wrap(self, obj, name: str, make) -> None:
        """Replace ``obj.name`` by ``make(original)`` on the instance."""
        original = getattr(obj, name)
        self._originals.append((obj, name, vars(obj).get(name)))
        object.__setattr__(obj, name, make(original))  # no Keras attribute tracking for a method

    def remove(self) -> None:
        for obj, name, had in reversed(self._originals):
            vars(obj).pop(name, None)
            if had is not None:
                object.__setattr__(obj, name, had)
        self._originals.clear()

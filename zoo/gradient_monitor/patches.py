"""Methods wrapped on the user's objects (not their classes) and put back afterwards: the seams of
zoo.gradient_monitor.hooks (TensorFlow) and of zoo.gradient_monitor.backends (JAX, PyTorch)."""
from __future__ import annotations


class Patches:
    """The wrapped methods of a few objects; :meth:`remove` restores each (an instance attribute
    the user had set included)."""

    def __init__(self):
        self._wrapped: list = []  # (object, name, the user's instance attribute or None, the original)

    def wrap(self, obj, name: str, make) -> None:
        """Replace ``obj.name`` by ``make(original)`` on the instance."""
        original = getattr(obj, name)
        self._wrapped.append((obj, name, vars(obj).get(name), original))
        object.__setattr__(obj, name, make(original))  # no Keras attribute tracking for a method

    def original(self, obj, name: str):
        """What ``obj.name`` was before :meth:`wrap`."""
        return next(original for o, n, _, original in self._wrapped if o is obj and n == name)

    def remove(self) -> None:
        for obj, name, had, _ in reversed(self._wrapped):
            vars(obj).pop(name, None)
            if had is not None:
                object.__setattr__(obj, name, had)
        self._wrapped.clear()

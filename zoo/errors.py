"""The one exception type of bad input, from every door (imports nothing of gradzoo's own)."""
from __future__ import annotations


class InputError(ValueError):
    """An argument, a file or a config value that cannot work, said in one line that names it
    and what to do: ``zoo.diagnose``, ``zoo.compare``, ``zoo.build_model``, ``zoo.train``,
    ``zoo.load_dataset`` and ``zoo.load_pretrained`` raise it (a config value's is its subclass
    zoo.config.schema.SpecError, an unknown pretrained name's zoo.pretrained.UnknownPretrainedError),
    before any model is built or measured. The commands print its message and exit 2."""

    def __init__(self, message: str = ""):
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        super().__init__("; ".join(lines) if len(lines) > 1 else message)  # one line, whoever wrote it

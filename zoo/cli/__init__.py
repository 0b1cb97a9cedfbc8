"""The console entry points, one module per command: parse the command line, check it, hand over
to the library (``zoo-train``: train.py, ``zoo-ablate``: ablate.py, ``zoo-runs``: runs.py,
``zoo-server``: server.py, ``zoo-diagnose``: diagnose.py, ``zoo-pretrained``: pretrained.py).

They live here, and not beside what they call, so that no module is named like a public function
of ``zoo`` (``zoo.train``, ``zoo.compare``): importing a submodule sets the package's attribute
of its name, which would replace the function. Nothing is imported here: each command pays only
for its own imports, and ``--help``, listings and config errors never load TensorFlow.
"""

"""What the train step measures and what becomes of it: the step's named fields (layout), its
extra instruments, the in-graph math, the recorder, the raw statistics file, the headline
numbers and the verdict rule. Only ``instruments``, ``graph_stats`` and ``sharpness`` import TensorFlow."""

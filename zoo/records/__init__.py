"""What becomes of the measurements, on the host (numpy only: nothing here imports TensorFlow).

    recorder.py  collects the step's packed vectors and hands a sink a thinned view
    stats.py     the raw statistics file (RunStats: every step's per-layer numbers)
    summary.py   a run's headline numbers (summary/*), the ones a study's claim compares
    verdict.py   healthy | vanishing | exploding | diverged, by a documented rule
    events.py    the first gradient event (a jump, or the gradient ceasing to reach a layer)
    posedness.py is a loss well posed on its targets (the ill-posed rule)

They read what the instruments declare (zoo.instruments: series, layout, each instrument's
fields), never the other way round.
"""

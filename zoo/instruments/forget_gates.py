"""LSTM forget gates: each LSTM layer's mean forget-gate activation over batch, time and units,
recomputed from its input and output sequences. A gate near 1 keeps the cell state (and the
gradient through it); near 0 it forgets."""
from __future__ import annotations

from zoo.instruments.base import Instrument


def forget_gate_mean(layer, x, h):
    """Mean forget-gate activation of a Keras LSTM layer from its input sequence ``x`` and output
    sequence ``h``: f_t = sigmoid(x_t W_f + h_(t-1) U_f + b_f), Keras' gate order being
    [i, f, c, o] and h_(-1) = 0."""
    import tensorflow as tf

    cell, u = layer.cell, layer.cell.units
    h_prev = tf.concat([tf.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
    pre = (tf.einsum("btd,du->btu", x, cell.kernel[:, u:2 * u])
           + tf.einsum("btd,du->btu", h_prev, cell.recurrent_kernel[:, u:2 * u]))
    if cell.use_bias:
        pre = pre + cell.bias[u:2 * u]
    return tf.reduce_mean(tf.sigmoid(pre))


class ForgetGates(Instrument):
    """Each LSTM layer's mean forget gate."""

    key = "forget_gate"
    axes = ("G",)
    dims = {"G": "LSTM layers"}
    sizes = {"G": "gate_layers"}
    doc = "mean forget-gate activation of each LSTM layer (over batch, time and units)"
    labels = ("gate_layers", "LSTM layer names (G = 0 without LSTMs)")
    mlflow = ("forget_gate/*",)
    summary_names = ("summary/forget_gate_init", "summary/forget_gate_end")

    def __init__(self, layers: list, model_input):
        self.layers, self.model_input = layers, model_input
        super().__init__(tuple(l.name for l in layers), (len(layers),))

    @classmethod
    def applies(cls, view):
        """The LSTM layers among the measured sequences' recurrent layers that return sequences
        (the gates are recomputed from the hidden states)."""
        import keras

        from zoo.instruments.time import sequences_of

        labels = {label for label, _ in sequences_of(view.main, view.sequences)}
        recurrent = [l for l in view.main.layers if l.name in labels
                     and isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional))]
        for layer in recurrent:
            if isinstance(layer, keras.layers.LSTM) and not layer.return_sequences:
                view.skipped[f"forget gate: {layer.name}"] = "return_sequences=False: its hidden states are not outputs"
            if isinstance(layer, keras.layers.Bidirectional) and isinstance(layer.forward_layer, keras.layers.LSTM):
                view.skipped[f"forget gate: {layer.name}"] = "a Bidirectional LSTM's gates are not read"
        lstms = [l for l in recurrent if isinstance(l, keras.layers.LSTM) and l.return_sequences]
        return cls(lstms, view.main.inputs[0]) if lstms else None

    def taps(self):
        taps = {f"gate_out:{l.name}": l.output for l in self.layers}
        taps.update({f"gate_in:{l.name}": l.input for l in self.layers if l.input is not self.model_input})
        return taps

    def compute(self, probe):
        import tensorflow as tf

        return {"forget_gate": tf.stack([
            forget_gate_mean(l, probe.x if l.input is self.model_input else probe.taps[f"gate_in:{l.name}"],
                             probe.taps[f"gate_out:{l.name}"]) for l in self.layers])}

    def raw(self, values):
        return {**super().raw(values), "forget_gate": values.astype("float32")}

    def epoch_metrics(self, latest):
        return {f"forget_gate/{layer}": float(v) for layer, v in zip(self.names, latest)}

    @staticmethod
    def summarize(stats):
        """The first LSTM layer's mean forget gate at the first and the last probe step."""
        if not stats.forget_gate.size:
            return {}
        return {"summary/forget_gate_init": float(stats.forget_gate[0, 0]),
                "summary/forget_gate_end": float(stats.forget_gate[-1, 0])}

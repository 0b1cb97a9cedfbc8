"""``import zoo.models._layers`` registers every zoo layer with Keras, so a saved zoo model
loads with ``keras.saving.load_model(path, safe_mode=True)`` (or ``mlflow.keras.load_model``).
The layers themselves live beside the builders that use them (zoo.models.serializable)."""
from zoo.models.serializable import register_all

REGISTERED = register_all()

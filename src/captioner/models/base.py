"""The interface every caption decoder implements, and the registry that finds them by name.

Training, greedy and beam search, saving and loading, `Captioner` and `evaluate` use only this
interface, so a new decoder is one new file:

    @register_decoder("mine")
    class MyDecoder(Decoder):
        config_class = MyConfig          # a `DecoderConfig` dataclass, saved in config.json
        features = "grid"                # takes (B, L, D) grids; "pooled" takes (B, D) vectors

        def encode_image(self, features, training=False): ...   # -> memory (any nest of tensors)
        def initial_state(self, memory): ...                    # -> list of (B, ...) tensors
        def step(self, memory, tokens, state): ...              # -> logits (B, V), state, attention (B, L) | None
        def call(self, inputs, training=False): ...             # (features, tokens (B, T)) -> logits (B, T, V)

Weights are addressed by name (`variable_names`): the variable's Keras path without the model's
own name, e.g. "lstm/lstm_cell/kernel", so the order in which layers are created never matters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import keras
import numpy as np

from captioner.errors import ArgumentError

if TYPE_CHECKING:
    import tensorflow as tf

POOLED = "pooled"  # features (B, D): one vector per image
GRID = "grid"  # features (B, L, D): one vector per cell of the encoder's spatial grid


@dataclasses.dataclass
class DecoderConfig:
    """Hyper-parameters every decoder has; subclasses add their own (with defaults)."""

    vocab_size: int
    max_length: int  # longest token sequence the decoder sees, start and end tokens included
    feature_dim: int = 2048  # size of one image feature vector (pooled, or one grid cell)
    embedding_dim: int = 256
    units: int = 256
    dropout: float = 0.5
    decoder: str = "merge"  # the registry name; selects the class when loading


class Decoder(keras.Model):
    """Base class of caption decoders. Subclasses set `config_class` and `features`."""

    config_class: ClassVar[type[DecoderConfig]] = DecoderConfig
    features: ClassVar[str] = POOLED
    registry_name: ClassVar[str] = ""

    def __init__(self, config: DecoderConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    # --- the interface ------------------------------------------------------------------------

    def encode_image(self, features: tf.Tensor | np.ndarray, training: bool = False) -> Any:
        """Image features -> the decoder's memory of the image (reused at every step)."""
        raise NotImplementedError

    def initial_state(self, memory: Any) -> list[tf.Tensor]:
        """The recurrent state before the first word; may depend on the image."""
        raise NotImplementedError

    def step(self, memory: Any, tokens: tf.Tensor, state: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor | None]:
        """One word: tokens (B,) -> (logits (B, V), new state, attention weights (B, L) or None)."""
        raise NotImplementedError

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        """Teacher forcing: (features, tokens (B, T)) -> logits (B, T, V)."""
        raise NotImplementedError

    # --- shared machinery -------------------------------------------------------------------

    def dummy_features(self, batch: int = 1) -> np.ndarray:
        """Zeros shaped like this decoder's input features (a 2x2 grid for grid decoders)."""
        shape = (batch, self.config.feature_dim) if self.features == POOLED else (batch, 4, self.config.feature_dim)
        return np.zeros(shape, "float32")

    def feature_shape(self) -> tuple[int | None, ...]:
        """Input feature shape without the batch axis: (D,) or (None, D)."""
        return (self.config.feature_dim,) if self.features == POOLED else (None, self.config.feature_dim)

    def build_all(self) -> Decoder:
        """Creates every variable by running one dummy batch (needed before loading weights)."""
        self((self.dummy_features(), np.ones((1, 2), "int32")), training=False)
        return self

    def variable_names(self) -> dict[str, keras.Variable]:
        """Weights by name ("lstm/lstm_cell/kernel"), random-seed state excluded."""
        prefix = self.name + "/"
        named: dict[str, keras.Variable] = {}
        for variable in self.weights:
            name = variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path
            if name in named:
                raise RuntimeError(f"two variables named {name!r} in {type(self).__name__}: give its layers unique names")
            named[name] = variable
        return named

    def get_config(self) -> dict:
        return {**super().get_config(), "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict) -> Decoder:
        return cls(cls.config_class(**config.pop("config")), **config)


_REGISTRY: dict[str, type[Decoder]] = {}

DecoderT = TypeVar("DecoderT", bound=Decoder)


def register_decoder(name: str) -> Callable[[type[DecoderT]], type[DecoderT]]:
    """Class decorator: makes a `Decoder` subclass available as `name` (config.json, `--decoder`)."""

    def register(cls: type[DecoderT]) -> type[DecoderT]:
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return register


def available_decoders() -> list[str]:
    _import_builtin_decoders()
    return sorted(_REGISTRY)


def decoder_class(name: str) -> type[Decoder]:
    """The class registered as `name`; `ArgumentError` listing the choices if there is none."""
    _import_builtin_decoders()
    if name not in _REGISTRY:
        raise ArgumentError(f"unknown decoder {name!r} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def make_config(name: str, **values: Any) -> DecoderConfig:
    """A decoder's config from values; keys the decoder does not have are ignored."""
    config_class = decoder_class(name).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in values.items() if k in known}, decoder=name)


def config_from_json(data: dict) -> DecoderConfig:
    """The config saved in a model's config.json (older models have no "decoder" key: merge)."""
    data = dict(data)
    return decoder_class(data.setdefault("decoder", "merge")).config_class(**data)


def build_decoder(config: DecoderConfig) -> Decoder:
    """The decoder `config` names, with every variable created."""
    return decoder_class(config.decoder)(config).build_all()


def _import_builtin_decoders() -> None:
    # The built-in decoders register themselves on import.
    from captioner.models import attention, merge  # noqa: F401

"""Model compression: int8 weight quantization and magnitude pruning of torch models.

    from sparkml_aiaas.compress import compress_model

    report = compress_model("models/digits_cnn", "models/digits_cnn_int8", method="int8",
                            eval_data=test_frame)
    print(report.summary_line())

The codec (:mod:`sparkml_aiaas.compress.codec`) is pure torch/numpy;
:func:`decode_state` is what a torch predictor calls to load non-dense
weights.  See docs/compression.md.
"""

from sparkml_aiaas.compress.codec import (WEIGHT_FORMATS, compressible_weights, decode_state,
                                          dequantize_per_channel, encode_state, fine_tune,
                                          prune_module, quantize_per_channel, remove_pruning)

_LAZY = {"compress_model": "sparkml_aiaas.compress.api",
         "CompressionReport": "sparkml_aiaas.compress.api",
         "METHODS": "sparkml_aiaas.compress.api"}

__all__ = ["WEIGHT_FORMATS", "compressible_weights", "decode_state", "dequantize_per_channel",
           "encode_state", "fine_tune", "prune_module", "quantize_per_channel", "remove_pruning",
           *_LAZY]


def __getattr__(name):
    # The API module reads artifacts and predictors; importing it lazily keeps
    # ``decode_state`` (needed by every torch predictor) light.
    if name in _LAZY:
        import importlib

        from sparkml_aiaas.errors import missing_dependency

        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            raise missing_dependency(exc) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'sparkml_aiaas.compress' has no attribute {name!r}")

"""mmalign plugin: a synthetic world of coloured shapes with exact ground truth.

Components: ``shapes-sft`` and ``shapes-pairs`` (sources), ``shapes-pope`` and
``shapes-chair`` (evaluators). Import :mod:`mmalign_shapes.world` for the world
itself and :mod:`mmalign_shapes.text` for captions and parsers.
"""
__version__ = "0.1.0"

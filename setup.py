"""Builds the optional C accelerator for exact resampling; without a compiler, edgeinfer uses numpy."""

from setuptools import Extension, setup

# -ffp-contract=off: the float32 path must round each product and each sum as numpy and torch do. GCC on
# aarch64 (and on x86 with FMA enabled) otherwise fuses `out += row * w` into one multiply-add, whose
# single rounding changes the last bit (measured on arm64: benchmarks/README.md, "arm64").
setup(ext_modules=[Extension("edgeinfer.pipeline._resample", ["edgeinfer/pipeline/_resample.c"], optional=True,
                             extra_compile_args=["-O3", "-ffp-contract=off"])])

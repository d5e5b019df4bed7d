"""Builds the optional C accelerator for exact resampling; without a compiler, edgeinfer uses numpy."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("edgeinfer._resample", ["edgeinfer/_resample.c"], optional=True,
                             extra_compile_args=["-O3"])])

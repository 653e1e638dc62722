# Shim for tools that still call setup.py (stdeb); metadata is in setup.cfg.
from setuptools import setup
setup()

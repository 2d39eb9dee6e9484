"""bncourse: batch normalization built from scratch, and the tools to put it to the test."""

__version__ = "0.1.0"

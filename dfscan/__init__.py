"""dfscan: forensic video scanner for manipulated faces."""
__version__ = "0.1.0"

//! Black-box cluster tests: real `cograft` processes on loopback ports in temp dirs.

"""Which h11 the server uses: the compiled build when installed, else the pure-Python one.

h11-mypyc is the same h11 compiled with mypyc; on the build machines it served
about a third more requests per second (see /work/shared/LAB.md). Both expose the
same API, so everything else imports `h11` from here and never mixes the two
(their event classes and sentinels are distinct objects).
"""

try:
    import h11_mypyc as h11
except ImportError:
    import h11

__all__ = ["h11"]

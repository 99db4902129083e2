"""fmrec_lib: FMRec (Flow Matching based Sequential Recommender, IJCAI 2025) reproduced."""
__version__ = "0.2.0"


def setup(notebook: str, size: str = "smoke", device: str = "auto", output_dir=None, **params):
    """The notebooks' set-up: see :func:`fmrec_lib.context.setup`."""
    from .context import setup as _setup

    return _setup(notebook, size, device, output_dir, **params)

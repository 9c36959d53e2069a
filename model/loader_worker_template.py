"""Imported once by the loader workers' forkserver, so that every worker forked from it starts warm.

Loading the compiled resize kernels from numba's cache takes about 0.4 s in a new process, and the
colormap about 0.1 s; done here, it is paid once per training process instead of once per worker and
loader pass (every validation pass starts new workers). The loader itself is imported too (torch,
webdataset, OpenCV): a worker unpickles its stream from it.
"""

import logging

from avlips.media import render_fast
from avlips.model import loader, resize_kernels  # noqa: F401  (loader: imported for the workers)

try:
    render_fast.warm_up()
    resize_kernels.warm_up()
except Exception as exc:  # a worker without the kernels decides again, and warns, on first use
    logging.getLogger("avlips.loader").debug("loader warm-up failed: %s: %s", type(exc).__name__, exc)

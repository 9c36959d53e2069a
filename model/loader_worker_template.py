"""Imported once by the loader workers' forkserver, so that every worker forked from it starts warm.

Loading the compiled resize kernels from numba's cache takes about 0.4 s in a new process, and the
colormap about 0.1 s; done here, it is paid once per training process instead of once per worker and
loader pass (every validation pass starts new workers).
"""

from avlips.model import loader

loader.warm_up()

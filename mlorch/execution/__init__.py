"""How traced graphs run on dask.distributed: clusters, the runner, worker log forwarding."""

from mlorch.execution.runner import install

install()

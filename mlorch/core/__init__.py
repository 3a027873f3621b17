"""Pure definitions: tasks, flows, graphs, cache. Depends on the standard library and dask only."""

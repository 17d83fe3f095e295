"""Small services that customer hosts run inside their namespaces."""

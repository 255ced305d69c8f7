"""One module per family of published dataset layouts; each ends with a ``FORMATS`` table that
``visent.data.loaders`` merges into the public one."""

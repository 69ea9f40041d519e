"""Configuration: the one validated settings object (env + YAML) and the routing file's schema."""

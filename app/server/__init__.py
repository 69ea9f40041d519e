"""The running service: the composition root, HTTP server, health, metrics, logs, tracing,
the event loop.
"""

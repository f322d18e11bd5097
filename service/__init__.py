"""gpulab's service: settings, the store, the Celery client side, the dispatcher and the HTTP API.

It never imports torch and never imports `worker`.
"""

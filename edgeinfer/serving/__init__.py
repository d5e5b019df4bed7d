"""``edgeinfer serve``: the HTTP API and the live view (the ``[serve]`` extra; Starlette on uvicorn)."""

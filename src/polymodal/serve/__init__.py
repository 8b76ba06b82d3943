"""The HTTP service (``polymodal serve``): ``polymodal.serve.app.create_app`` and ``serve``.

Importing this package imports nothing heavy; FastAPI and uvicorn load with ``app``.
"""

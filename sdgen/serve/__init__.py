"""`sdgen serve`: the model stays loaded and the AUTOMATIC1111 web API drives sdgen's own loop.

`schema.py` (the request bodies, A1111's field names), `translate.py` (a body -> a GenerationRequest; images
-> the A1111 response), `engine.py` (the loaded model, the one-at-a-time queue, progress, interrupt),
`listings.py` (models, VAEs, LoRAs, embeddings), `guards.py` (auth and the body limit, before the body is
read), `replies.py` (every error as one ErrorBody), `app.py` (the FastAPI routes, limits), `server.py` (uvicorn).
docs/server-on-a-network.md says what this exposes and how it is limited. FastAPI and uvicorn come with the
`serve` extra: pip install "sdgen[serve]".
"""

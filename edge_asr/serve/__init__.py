"""`edge-asr serve`: one loaded model behind a Wyoming server and an OpenAI-style HTTP API (docs/serve.md).

    engine.py          the model, the thread pool that runs it and the bounded queue in front of it,
                       audio conversion, the log line per request (numpy and the standard library)
    wyoming_server.py  the Wyoming ASR service (Home Assistant, Rhasspy, wyoming-satellite): `wyoming`
    http_server.py     POST /v1/audio/transcriptions, GET /v1/models, GET /health: `aiohttp`
    command.py         the `serve` subcommand's flags, and the loop that runs both services and stops
                       them gracefully on SIGTERM

The `serve` extra (`pip install '.[serve]'`) brings `wyoming` and `aiohttp`; only the two services
import them, and `command.py` imports those when the command runs, so the rest of edge-asr works without.
"""

"""FastAPI peer of the hot path: POST /factorize answered from a JSON value cached in Redis,
the stack Cog/BentoML-style model servers use (uvicorn, async Redis client)."""

import os

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
_redis = aioredis.from_url(os.environ["REDIS_URL"])


@app.post("/factorize")
async def factorize(request: Request) -> Response:
    await request.json()
    return Response(await _redis.get("bench:cached"), media_type="application/json")

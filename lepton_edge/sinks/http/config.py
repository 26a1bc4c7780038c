"""`http:` in the config: the HTTP API and the live page."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Loopback unless set: the API shows the cameras. Use 0.0.0.0 with a token_file.
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # A file holding the bearer token (first line); without it the API is open.
    token_file: str | None = None
    mjpeg_fps: Annotated[float, Field(gt=0, le=60)] = 5.0
    mjpeg_width: Annotated[int, Field(ge=64, le=7680)] = 960
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 80
    events: Annotated[int, Field(ge=1, le=100_000)] = 200  # recent events kept for /api/events
    max_upload_mb: Annotated[float, Field(gt=0, le=200)] = 16.0  # POST /v1/vision/detection

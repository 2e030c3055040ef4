"""``python -m qwen3_aligner_triton.openai_front``: run the OpenAI-style front with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from ..contract import MODEL_NAME
from .app import DEFAULT_MAX_TEXT_BYTES, DEFAULT_MAX_UPLOAD_BYTES, FrontSettings, create_app
from .backend import TritonAligner

API_KEY_ENV = "ALIGNER_OPENAI_API_KEY"  # the bearer key, when not given as a file
DEFAULT_PORT = 9000
DEFAULT_TRITON_URL = "127.0.0.1:8001"
DEFAULT_TIMEOUT = 3600.0  # seconds for one alignment: a 4 h recording on a busy server
DEFAULT_LIMIT_CONCURRENCY = 64  # connections at once; more are answered 503 by uvicorn
GRACEFUL_SHUTDOWN_SECONDS = 30.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m qwen3_aligner_triton.openai_front",
        description="The OpenAI-style HTTP front of the aligner, talking to Triton over gRPC.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--triton-url",
        default=DEFAULT_TRITON_URL,
        help=f"Triton's gRPC host:port (default {DEFAULT_TRITON_URL})",
    )
    p.add_argument(
        "--max-upload-bytes",
        type=int,
        default=DEFAULT_MAX_UPLOAD_BYTES,
        help=f"largest request body (default {DEFAULT_MAX_UPLOAD_BYTES}, 256 MiB); larger: 413",
    )
    p.add_argument(
        "--max-text-bytes",
        type=int,
        default=DEFAULT_MAX_TEXT_BYTES,
        help=f"largest transcript or other form field (default {DEFAULT_MAX_TEXT_BYTES})",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        help=f"file holding the bearer key /v1/ routes require (or env {API_KEY_ENV}); "
        "default: no key",
    )
    p.add_argument(
        "--served-model-name",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a model id /v1/models lists and requests may name (repeatable; {MODEL_NAME} always)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for one alignment (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        default=DEFAULT_LIMIT_CONCURRENCY,
        help="connections served at once; beyond it, 503 (default %(default)s)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p.parse_args(argv)


def read_api_key(path: Path | None, environ: os._Environ[str] | dict[str, str]) -> str | None:
    """The bearer key from ``path`` (its one line, stripped) or the environment; None for none."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        if not lines:
            raise ValueError(f"{path} holds no key")
        if len(lines) > 1:
            raise ValueError(f"{path} holds {len(lines)} lines; put the key alone on one line")
        return lines[0].strip()
    return environ.get(API_KEY_ENV, "").strip() or None


def build(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Starlette:
    """The app ``args`` describe, with its Triton connection opened and closed by its lifespan."""
    names = [MODEL_NAME, *(n for n in args.served_model_name if n != MODEL_NAME)]
    settings = FrontSettings(
        max_upload_bytes=args.max_upload_bytes,
        max_text_bytes=args.max_text_bytes,
        api_key=read_api_key(args.api_key_file, dict(os.environ if environ is None else environ)),
        model_ids=tuple(dict.fromkeys(names)),
    )
    aligner = TritonAligner(args.triton_url, args.timeout)
    app = create_app(aligner, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await aligner.close()

    app.router.lifespan_context = lifespan
    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s openai-front %(levelname)s %(message)s"
    )
    try:
        if args.limit_concurrency < 1:
            raise ValueError(f"--limit-concurrency must be >= 1, got {args.limit_concurrency}")
        app = build(args)
    except (OSError, ValueError) as e:
        print(f"openai-front: error: {e}", file=sys.stderr, flush=True)
        return 2
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        limit_concurrency=args.limit_concurrency,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_level=args.log_level,
        server_header=False,
        log_config=None,  # uvicorn's loggers go through the format set above
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

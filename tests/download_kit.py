"""Shared fixtures and helpers for the downloader tests: a test CA, a local HTTPS server
serving one image, a fake sleep, and job documents for it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from https_server import HttpsServer, Pki, Route, make_pki

from host_bridge.image.download import Downloader
from host_bridge.jobs.documents import FirmwareJob

IMAGE = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes: several 64 KiB pieces
SECRET = "c2VjcmV0LXNpZ25hdHVyZQ"  # stands for an X-Amz-Signature: must never be shown
PATH = "/fw.bin"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: Pki) -> Iterator[HttpsServer]:
    with HttpsServer(pki) as srv:
        srv.routes[PATH] = Route(body=IMAGE)
        yield srv


class Sleeps(list[float]):
    """A fake sleep: remembers the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def job_for(url: str, data: bytes = IMAGE, **fields: object) -> FirmwareJob:
    values: dict[str, object] = {
        "size": len(data),
        "sha256": hashlib.sha256(data).digest(),
        "md5": hashlib.md5(data).digest(),
    }
    values.update(fields)
    return FirmwareJob(url=url, source="native", **values)  # type: ignore[arg-type]


def presigned(token: str) -> str:
    return f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2Fx&X-Amz-Signature={token}"


def downloader(pki: Pki, sleeps: Sleeps, **options: object) -> Downloader:
    return Downloader(ca_file=pki.ca_cert, sleep=sleeps, backoff_s=0.5, **options)  # type: ignore[arg-type]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

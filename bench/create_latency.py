"""CreateUser latency for a 12 MP JPEG vs a ~100 KB JPEG, against a running accounts service.

Usage: python bench/create_latency.py [--addr localhost:50051] [--calls 40]
Calls alternate between the two images in one run, so machine noise hits both alike; the
result line gives the median and p90 of each and their ratio (12 MP / small).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
import uuid

import grpc
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from PIL import Image


def jpeg(width: int, height: int, quality: int) -> bytes:
    """A photo-like JPEG (noise over gradients), so its size is realistic for its pixels."""
    rng = random.Random(width)
    small = Image.new("RGB", (64, 48))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                   for _ in range(64 * 48)])  # fmt: skip
    image = small.resize((width, height), Image.Resampling.BICUBIC)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def padded(data: bytes, total: int) -> bytes:
    """The same JPEG grown to `total` bytes with comment (COM) segments: same pixels, more bytes."""
    segments = []
    room = total - len(data)
    while room > 0:
        body = min(room - 4, 65533)
        segments.append(b"\xff\xfe" + (body + 2).to_bytes(2, "big") + b"\0" * body)
        room -= body + 4
    out = data[:2] + b"".join(segments) + data[2:]
    return out + b"\0" * (total - len(out)) if len(out) < total else out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default="localhost:50051")
    parser.add_argument("--calls", type=int, default=40, help="calls per image")
    args = parser.parse_args()
    big, small = jpeg(4000, 3000, 90), jpeg(640, 480, 92)
    # The third image has 0.3 MP like `small` but as many bytes as `big`: if CreateUser decoded
    # pixels, 12mp would be slower than it; being header-only, the two cost the same.
    images = {"12mp": big, "small": small, "0.3mp_same_bytes": padded(small, len(big))}
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(args.addr, options=options) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        times: dict[str, list[float]] = {name: [] for name in images}
        for i in range(args.calls + 2):
            for name, data in images.items():
                request = accounts_pb2.CreateUserRequest(
                    email=f"bench-{uuid.uuid4().hex[:12]}@example.com",
                    display_name="Bench",
                    avatar_image=data,
                )
                started = time.perf_counter()
                stub.CreateUser(request, timeout=30)
                if i >= 2:  # the first rounds warm up connections
                    times[name].append(1000 * (time.perf_counter() - started))
    for name, data in images.items():
        ms = times[name]
        print(f"image={name} bytes={len(data)} median_ms={statistics.median(ms):.1f} "
              f"p90_ms={percentile(ms, 0.9):.1f}")  # fmt: skip
    med = {name: statistics.median(ms) for name, ms in times.items()}
    print(
        f"createuser 12mp/small median_ratio={med['12mp'] / med['small']:.2f} "
        f"12mp/0.3mp_same_bytes median_ratio={med['12mp'] / med['0.3mp_same_bytes']:.2f}"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks the container image build without a Docker engine.

    python3 .ci/image.py check            # the Dockerfile, read with Docker's own parser (PyPI `dockerfile`)
    python3 .ci/image.py build [--check]  # the Dockerfile's cargo command, run in a copy of the build
                                          # context that .dockerignore leaves; --check: cargo check instead

`build` proves the image's build step works from exactly what Docker would send: the files
.dockerignore keeps, `--locked` against Cargo.lock. Its target directory is target/image-build.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARGO_COMMAND = "cargo build --release --locked --no-default-features --bin appservicelink"


def fail(message: str) -> None:
    print(f"image.py: {message}", file=sys.stderr)
    sys.exit(1)


def parse_dockerfile():
    try:
        import dockerfile  # type: ignore[import-not-found]
    except ImportError:
        fail("the `dockerfile` package is missing: pip install --ignore-requires-python -r .ci/requirements.txt")
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def check() -> None:
    commands = parse_dockerfile()
    args = {}
    for c in commands:
        if c.cmd == "ARG" and "=" in c.value[0]:
            k, v = c.value[0].split("=", 1)
            args.setdefault(k, v)

    def resolve(image: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)

    stages = [c for c in commands if c.cmd == "FROM"]
    problems = []
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    builder, runtime = resolve(stages[0].value[0]), resolve(stages[-1].value[0])
    if not re.fullmatch(r"rust:\d+\.\d+\.\d+-bookworm(@sha256:[0-9a-f]{64})?", builder):
        problems.append(f"builder {builder!r} is not an exact rust:X.Y.Z-bookworm release")
    if runtime not in ("gcr.io/distroless/cc-debian12:nonroot", "gcr.io/distroless/static-debian12:nonroot") and not re.fullmatch(
        r"gcr\.io/distroless/(cc|static)-debian12:nonroot@sha256:[0-9a-f]{64}", runtime
    ):
        problems.append(f"runtime {runtime!r} is not distroless nonroot (no shell)")
    runs = [c for c in commands if c.cmd == "RUN"]
    if not any(CARGO_COMMAND in " ".join(c.value) for c in runs):
        problems.append(f"no RUN with `{CARGO_COMMAND}`")
    final = commands[commands.index(stages[-1]):]
    if any(c.cmd == "RUN" for c in final):
        problems.append("the runtime stage runs commands (it has no shell)")
    users = [c for c in final if c.cmd == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1].value[0]):
        problems.append("the runtime stage needs a numeric non-root USER")
    entrypoints = [c for c in final if c.cmd == "ENTRYPOINT"]
    if not entrypoints or not entrypoints[-1].json or entrypoints[-1].value[0] != "/usr/local/bin/appservicelink":
        problems.append("ENTRYPOINT must be the binary, in exec (JSON) form")
    if not any(c.cmd == "COPY" and "--from=build" in c.flags for c in final):
        problems.append("the binary is not copied from the build stage")
    labels = {}
    for c in final:
        if c.cmd == "LABEL":
            labels.update(zip(c.value[0::2], c.value[1::2]))
    for key in ("title", "description", "version", "revision", "licenses"):
        if f"org.opencontainers.image.{key}" not in labels:
            problems.append(f"missing LABEL org.opencontainers.image.{key}")
    for p in problems:
        print(f"DOCKERFILE: {p}", file=sys.stderr)
    if problems:
        fail(f"{len(problems)} Dockerfile problem(s)")
    print(f"Dockerfile ok: {builder} -> {runtime}, user {users[-1].value[0]}, {len(labels)} OCI labels")


def ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as Docker reads it: last match wins, `!` re-includes, a match on a directory
    covers everything in it."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((negate, re.compile(regex + "$")))
    return patterns


def excluded(path: str, patterns) -> bool:
    parents = path.split("/")
    candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
    result = False
    for negate, regex in patterns:
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


def build_context(dest: Path) -> int:
    patterns = ignore_patterns()
    if dest.exists():
        shutil.rmtree(dest)
    count = 0
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        dirnames[:] = [d for d in dirnames if d not in (".git", "target")]
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if excluded(rel, patterns):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
            count += 1
    return count


def build(check_only: bool) -> None:
    context = ROOT / "target" / "image-context"
    files = build_context(context)
    command = shlex.split(CARGO_COMMAND)
    if check_only:
        command[1] = "check"
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "image-build"))
    print(f"build context: {files} files (per .dockerignore) in {context}")
    print(f"$ {' '.join(command)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=context, env=env)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        fail(f"`{' '.join(command)}` failed in the image's build context after {elapsed:.0f}s")
    print(f"`{' '.join(command)}` succeeded in {elapsed:.0f}s")
    if not check_only:
        binary = Path(env["CARGO_TARGET_DIR"]) / "release" / "appservicelink"
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
        print(f"{binary}: {out.stdout.strip()}, {binary.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    b = sub.add_parser("build")
    b.add_argument("--check", action="store_true", help="cargo check instead of cargo build")
    args = parser.parse_args()
    if args.command == "check":
        check()
    else:
        build(args.check)


if __name__ == "__main__":
    main()

"""Regenerate the committed protobuf/gRPC modules: ``python -m coord.pb.generate``.

``generate(out_dir)`` writes the modules for every ``*.proto`` here into ``out_dir``
(mirroring the ``coord/pb/`` path); the drift test generates into a temp dir and
compares with the committed files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO = PROTO_DIR.parents[1]


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # noqa: PLC0415 - a dev dependency, only needed here

    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins (protoc-gen-mypy*) next to this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    args = [
        "grpc_tools.protoc",
        f"-I{REPO}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(p.relative_to(REPO)) for p in proto_files()],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    generate(REPO)
    sys.stdout.write(f"regenerated {len(proto_files())} proto files into {PROTO_DIR}\n")


if __name__ == "__main__":
    main()

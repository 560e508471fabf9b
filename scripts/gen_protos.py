"""Regenerate the Python code of the protobuf contract (``make proto``).

Compiles every ``protos/wallet/v1/*.proto`` with grpcio-tools' bundled ``protoc`` into
``<out>/wallet/v1/``: messages (``*_pb2.py``), gRPC stubs and servicers (``*_pb2_grpc.py``)
and their typed stubs (``*.pyi``, by mypy-protobuf). ``<out>/wallet`` is rebuilt from scratch,
so files of deleted protos disappear. The output depends only on the protos and the pinned
versions of grpcio-tools and mypy-protobuf: the same input gives byte-identical files.

Usage: ``python scripts/gen_protos.py [--out DIR]`` (default: ``generated/`` in the repository).
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PACKAGE_DIR = Path("wallet") / "v1"
DEFAULT_OUT = REPO_ROOT / "generated"

# Files the compiler does not produce but the package needs.
_PACKAGE_FILES = {
    Path("wallet") / "__init__.py": '"""Generated protobuf code of the wallet API."""\n',
    Path("wallet") / "py.typed": "",
    PACKAGE_DIR / "__init__.py": '"""Generated code of package wallet.v1 (run `make proto`)."""\n',
}


def proto_files() -> list[Path]:
    """The contract's .proto files, relative to ``PROTO_ROOT``, in a stable order."""
    files = sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files in {PROTO_ROOT / PACKAGE_DIR}")
    return files


def _plugin(name: str) -> Path:
    """A protoc plugin installed next to the running interpreter (the virtualenv's bin)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}: install the dev extras")
    return path


def compile_protos(dest: Path) -> None:
    """Run protoc with the Python, gRPC and mypy generators, writing into ``dest``."""
    # grpcio-tools' copy of google/protobuf/*.proto (timestamp, duration...).
    include = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={dest}",
        f"--grpc_python_out={dest}",
        f"--mypy_out={dest}",
        f"--mypy_grpc_out={dest}",
        *(p.as_posix() for p in proto_files()),
    ]
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({result.returncode}):\n{result.stderr}")


def generate(out: Path) -> None:
    """Rebuild ``out/wallet`` from the protos."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gen_protos_") as tmp:
        staging = Path(tmp)
        compile_protos(staging)
        for relative, content in _PACKAGE_FILES.items():
            (staging / relative).write_text(content, encoding="utf-8")
        target = out / "wallet"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(staging / "wallet", target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory to write the `wallet` package into (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    generate(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

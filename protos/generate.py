"""Regenerate the committed Python code for every .proto under protos/jitnet.

  jitnet/v1/jitnet.proto                        jitnet's own API (jitnet.v1)
  jitnet/inference/open_inference_grpc.proto    the Open Inference Protocol (package `inference`)

The directory path is the import path (jitnet/v1, jitnet/inference), so protoc's absolute
imports (`from jitnet.v1 import jitnet_pb2`) work unchanged once installed, and the protocol's
generated module is jitnet.inference.open_inference_grpc_pb2, no top-level `inference`. Run:

    python protos/generate.py [--out DIR]
"""

import argparse
import pathlib
import sys

PROTOS = pathlib.Path(__file__).resolve().parent
SOURCES = ["jitnet/v1/jitnet.proto", "jitnet/inference/open_inference_grpc.proto"]


def generate(out_dir: pathlib.Path) -> None:
    import grpc_tools
    from grpc_tools import protoc  # a dev/test dependency, never needed at run time

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(PROTOS / s) for s in SOURCES],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=PROTOS)
    generate(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

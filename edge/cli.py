"""binsort-edge: the edge-side command line (no torch)."""

import argparse
import json
import sys

from protocol.errors import BinsortError, run_cli


def _classify(args) -> int:
    from edge.engine import load_engine
    from edge.imagefolder import image_files
    from edge.preprocess import load_inputs

    engine = load_engine(args.model)
    labels = engine.model.labels
    paths = image_files(args.paths)
    if not paths:
        raise BinsortError("no images found in %s" % " ".join(args.paths))
    h, w = engine.model.input_shape
    for start in range(0, len(paths), 256):
        batch = paths[start : start + 256]
        best, conf, scores = engine.classify(load_inputs(batch, h, w))
        for path, b, c, s in zip(batch, best, conf, scores, strict=True):
            row = {
                "path": path,
                "label": labels[b],
                "confidence": round(float(c), 6),
                "scores": {lb: round(float(v), 6) for lb, v in zip(labels, s, strict=True)},
            }
            print(json.dumps(row))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="binsort-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("classify", help="classify images with a .bnn model, one JSON line each")
    p.add_argument("--model", required=True, help="a .bnn model file")
    p.add_argument("paths", nargs="+", help="image files or folders of images")
    p.set_defaults(run=_classify)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("binsort-edge", args.run, args)


if __name__ == "__main__":
    sys.exit(main())

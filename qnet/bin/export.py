"""Export a qnet model to TorchScript and/or ONNX for deployment (lengths and masking kept).

    python -m qnet.bin.export --model exp/model.pt --out-dir exp/export
    python -m qnet.bin.export --model exp/model.pt --out-dir exp/export --formats onnx --fold-bn false

writes OUT_DIR/model.pt (TorchScript), OUT_DIR/model.onnx, OUT_DIR/tokens.txt and OUT_DIR/deploy.json
(inputs/outputs, token and feature settings, model config). Both graphs take feats (B, T, 64) raw
log-mel + feat_lens (B,) int64 and return log_probs (B, T', V) + out_lens (B,); ONNX has dynamic batch
and time axes. Every export is checked against the eager model on a padded batch (max abs diff on
valid frames <= --atol) before deploy.json is written.

Load: `torch.jit.load("model.pt")(feats, feat_lens)`, or onnxruntime
`InferenceSession("model.onnx").run(None, {"feats": ..., "feat_lens": ...})`.
"""

import argparse
import logging
import sys
from pathlib import Path

from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="qnet checkpoint (model or training .pt)")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the exported files")
    parser.add_argument("--formats", default="torchscript,onnx",
                        help="comma-separated: torchscript, onnx [default: torchscript,onnx]")
    parser.add_argument("--fold-bn", type=str2bool, default=True,
                        help="fold BatchNorm into the convs and use the fast (B, T, C) inference graph "
                             "(false: export the training module as is) [default: true]")
    parser.add_argument("--torchscript-method", choices=("auto", "script", "trace"), default="auto",
                        help="torch.jit.script, trace, or script falling back to trace [default: auto]")
    parser.add_argument("--opset", type=int, default=13, help="ONNX opset [default: 13]")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="max allowed |log-prob difference| to the eager model [default: 1e-4]")
    parser.add_argument("--log-file", type=Path, default=None, help="also log to this file")
    return parser


def main(argv=None) -> int:
    """Export; return the exit status."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    from qnet.export import FORMATS, ExportError, export_model
    from qnet.model import CheckpointError, load_model

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        logging.error("--formats: unknown %s; choose from %s", bad or "(empty)", ",".join(FORMATS))
        return 1
    try:
        model = load_model(args.model)
    except CheckpointError as exc:
        logging.error("%s", exc)
        return 1
    try:
        result = export_model(model, args.out_dir, formats=formats, fold_bn=args.fold_bn, opset=args.opset,
                              torchscript_method=args.torchscript_method, atol=args.atol)
    except ExportError as exc:
        logging.error("%s: export failed: %s", args.model, exc)
        return 1
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in result["max_diff"].items())
    logging.info("exported %s (%s, fold_bn=%s) -> %s; max |diff| vs eager on a padded batch: %s",
                 args.model, model.config.name, args.fold_bn, ", ".join(result["files"]), diffs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

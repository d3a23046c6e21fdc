"""Time NVIDIA NeMo's own QuartzNet (random weights) on CPU; prints one JSON object on stdout.

Runs inside the NeMo venv (bench/nemo_env.sh), normally as a subprocess of bench/bench_model_speed.py:

    /work/nemo-venv/bin/python bench/nemo_quartznet.py --configs 5x5,10x5,15x5 --repeats 3 --threads 2

The model is NeMo's `EncDecCTCModel` built from the layout of NeMo's examples/asr/conf/quartznet/
quartznet_15x5.yaml (encoder/decoder/preprocessor/spec_augment sections, written out below because the
pip package does not ship the examples); 10x5 and 5x5 repeat each block type 2 and 1 times instead of 3.
Timed calls use `model.forward(processed_signal=..., processed_signal_length=...)`, i.e. features in
(B, 64, T) as NeMo's preprocessor emits them, so the mel front end is not timed (qnet's model also takes
features). Training steps use NeMo's spec augmentation (train mode) and torch's ctc_loss with NeMo's
blank (the last class).
"""

import argparse
import json
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model_speed as bench  # noqa: E402  (shared timing code; imports only torch)

LABELS = [" "] + list("abcdefghijklmnopqrstuvwxyz") + ["'"]

# (filters, kernel) of NeMo's five QuartzNet block types B1..B5.
BLOCK_TYPES = [(256, 33), (256, 39), (512, 51), (512, 63), (512, 75)]


def jasper_layout(copies: int, repeat: int = 5):
    """The `encoder.jasper` list of quartznet_15x5.yaml with each block type `copies` times."""
    layout = [dict(filters=256, repeat=1, kernel=[33], stride=[2], dilation=[1], dropout=0.0,
                   residual=False, separable=True)]
    for filters, kernel in BLOCK_TYPES:
        for _ in range(copies):
            layout.append(dict(filters=filters, repeat=repeat, kernel=[kernel], stride=[1], dilation=[1],
                               dropout=0.0, residual=True, separable=True))
    layout.append(dict(filters=512, repeat=1, kernel=[87], stride=[1], dilation=[2], dropout=0.0,
                       residual=False, separable=True))
    layout.append(dict(filters=1024, repeat=1, kernel=[1], stride=[1], dilation=[1], dropout=0.0,
                       residual=False))
    return layout


def nemo_config(name: str):
    """An EncDecCTCModel config (quartznet_15x5.yaml model section) for "5x5", "10x5" or "15x5"."""
    copies = {"5x5": 1, "10x5": 2, "15x5": 3}[name]
    return {
        "sample_rate": 16000,
        "labels": LABELS,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature", "window_size": 0.02, "sample_rate": 16000, "window_stride": 0.01,
            "window": "hann", "features": 64, "n_fft": 512, "frame_splicing": 1, "dither": 1e-5,
        },
        "spec_augment": {
            "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
            "rect_freq": 50, "rect_masks": 5, "rect_time": 120,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 64, "activation": "relu", "conv_mask": True, "jasper": jasper_layout(copies),
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
            "feat_in": 1024, "num_classes": len(LABELS), "vocabulary": LABELS,
        },
    }


def build_nemo_model(name: str):
    """NeMo's EncDecCTCModel for a QuartzNet layout, random (xavier) weights, no data loaders."""
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecCTCModel

    return EncDecCTCModel(cfg=OmegaConf.create(nemo_config(name)))


class NemoRunner:
    """Adapter giving the bench's (feats (B,T,F), lens) -> (log_probs (B,T',V), out_lens) interface."""

    layout = "bft"  # the bench hands NeMo features as (B, F, T), its native layout

    def __init__(self, model):
        self.model = model
        self.blank = model.decoder.num_classes_with_blank - 1
        self.num_tokens = model.decoder.num_classes_with_blank

    def __call__(self, feats, lens):
        log_probs, out_lens, _ = self.model.forward(processed_signal=feats, processed_signal_length=lens)
        return log_probs, out_lens


def main():
    """Parse options, time every configuration, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench.add_worker_options(parser)
    args = parser.parse_args()
    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    try:
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
    except Exception:  # older/newer NeMo without that logger: keep the default
        pass
    import nemo

    def make_runner(name):
        model = build_nemo_model(name)
        params = sum(p.numel() for p in model.parameters())
        return NemoRunner(model), params

    result = bench.run_worker("nemo", make_runner, args)
    result["nemo"] = nemo.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()

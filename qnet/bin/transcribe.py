"""Transcribe audio files with a QuartzNet CTC model; prints `file<TAB>transcript` per file.

    python -m qnet.bin.transcribe exp/model.pt a.wav b.flac
    python -m qnet.bin.transcribe exp/model.pt a.wav --method 1best --lang-dir data/lang_char
    python -m qnet.bin.transcribe exp/model.pt a.wav --method whole-lattice-rescoring \
        --lang-dir data/lang_char --G-rescore data/lm/G_4_gram.fst.txt --lm-scale 0.8

Reads whatever lhotse/soundfile read (torchaudio for the rest), mixes down to mono, resamples to 16 kHz.
Greedy needs no k2 (and no lang dir for character models).
"""

import argparse
import logging
import sys
from typing import List, Tuple

import torch

from qnet.utils import setup_logger

SAMPLE_RATE = 16000


def load_audio(path: str) -> torch.Tensor:
    """Mono float waveform at 16 kHz of an audio file (lhotse/soundfile, else torchaudio)."""
    try:
        from lhotse import Recording

        rec = Recording.from_file(path)
        if rec.sampling_rate != SAMPLE_RATE:
            rec = rec.resample(SAMPLE_RATE)
        audio = torch.from_numpy(rec.load_audio())  # (channels, samples)
    except Exception as exc:  # formats lhotse/soundfile cannot read
        try:
            import torchaudio

            audio, sr = torchaudio.load(path)
            if sr != SAMPLE_RATE:
                audio = torchaudio.functional.resample(audio, sr, SAMPLE_RATE)
        except Exception as exc2:
            raise ValueError(f"{path}: cannot read audio ({exc}; torchaudio: {exc2})") from exc2
    if audio.dim() == 2:
        audio = audio.mean(dim=0)
    return audio.to(torch.float32)


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="checkpoint (qnet.model.load_model)")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--method", default="greedy",
                   choices=["greedy", "ctc-decoding", "1best", "whole-lattice-rescoring"])
    p.add_argument("--lang-dir", default=None)
    p.add_argument("--hlg", default=None, help="HLG (default LANG_DIR/HLG.pt)")
    p.add_argument("--G-rescore", dest="G_rescore", default=None)
    p.add_argument("--lm-scale", type=float, default=0.8, help="whole-lattice-rescoring LM scale")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    return p


def transcribe(args) -> List[Tuple[str, str]]:
    """(file, transcript) for every audio file, in order."""
    from qnet.decode import Decoder, DecodeOptions
    from qnet.features import compute_nemo_mel
    from qnet.model import load_model
    from qnet.tokens import CharTokenizer, load_tokenizer

    device = torch.device(args.device)
    model = load_model(args.model).to(device).eval()
    if args.lang_dir:
        tokenizer = load_tokenizer(args.lang_dir)
    elif "<space>" in model.tokens:
        tokenizer = CharTokenizer(model.tokens)
    else:
        raise ValueError(f"{args.model} is not a character model: give --lang-dir (with bpe.model)")
    decoder = Decoder([args.method], tokenizer, args.lang_dir, args.G_rescore, args.hlg, device,
                      DecodeOptions(lm_scales=[args.lm_scale]))
    key = decoder.result_keys()[0]
    out = []
    for i in range(0, len(args.audio), args.batch_size):
        paths = args.audio[i: i + args.batch_size]
        waves = [load_audio(p) for p in paths]
        lens = torch.tensor([w.numel() for w in waves], dtype=torch.int64)
        audio = torch.zeros(len(waves), int(lens.max()))
        for b, w in enumerate(waves):
            audio[b, : w.numel()] = w
        feats, feat_lens = compute_nemo_mel(audio.to(device), lens.to(device))
        with torch.no_grad():
            log_probs, out_lens = model(feats, feat_lens)
        hyps = decoder.decode(log_probs, out_lens, paths)[key]
        out.extend(zip(paths, hyps))
    return out


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    setup_logger(level=logging.WARNING)
    for path, text in transcribe(args):
        sys.stdout.write(f"{path}\t{text}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

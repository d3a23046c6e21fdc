"""qnet.bin.transcribe on audio files of several formats, rates and channel counts."""

import numpy as np
import soundfile as sf

from decode_helpers import make_char_lang, make_tiny_model


def _write_audio(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    p = tmp_path / "mono16k.wav"
    sf.write(str(p), 0.1 * rng.standard_normal(16000), 16000)
    paths.append(p)
    p = tmp_path / "stereo8k.flac"
    sf.write(str(p), 0.1 * rng.standard_normal((6000, 2)), 8000)
    paths.append(p)
    p = tmp_path / "short44k.ogg"
    sf.write(str(p), 0.1 * rng.standard_normal(22050), 44100)
    paths.append(p)
    return [str(p) for p in paths]


def test_transcribe_greedy_prints_one_line_per_file(tmp_path, capsys):
    from qnet.bin.transcribe import load_audio, main

    model = make_tiny_model(tmp_path / "model.pt")
    audio = _write_audio(tmp_path)
    wav = load_audio(audio[1])
    assert wav.dim() == 1 and abs(wav.numel() - 12000) <= 1  # 8 kHz stereo -> 16 kHz mono
    main([str(model)] + audio + ["--batch-size", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == audio
    assert all(line.count("\t") == 1 for line in lines)


def test_transcribe_with_hlg(tmp_path, capsys):
    from qnet.bin.transcribe import main

    model = make_tiny_model(tmp_path / "model.pt")
    lang = make_char_lang(tmp_path)
    audio = _write_audio(tmp_path)
    main([str(model)] + audio[:2] + ["--method", "whole-lattice-rescoring", "--lang-dir", str(lang),
                                      "--G-rescore", str(tmp_path / "G.fst.txt")])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    vocab = {"the", "cat", "sat", "hat", "on", "a"}
    for line in lines:
        assert set(line.split("\t")[1].split()) <= vocab  # HLG can only output lexicon words


def test_transcribe_with_the_trained_model_matches_the_references(learned, capsys):
    """The learning check's trained model (conftest `learned`) transcribes the held-out audio files from
    the waveforms (features computed by transcribe itself): the transcripts must match the references."""
    from lhotse import CutSet

    from qnet.bin.transcribe import main
    from qnet.scoring import word_errors

    cuts = list(CutSet.from_file(learned["valid_cuts"]))
    wavs = [cut.recording.sources[0].source for cut in cuts]
    refs = [" ".join(cut.supervisions[0].text.lower().split()) for cut in cuts]
    main([str(learned["model"])] + wavs + ["--batch-size", "16"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == wavs
    hyps = [line.split("\t")[1] for line in lines]
    errors = sum(word_errors(r, h) for r, h in zip(refs, hyps))
    words = sum(len(r.split()) for r in refs)
    exact = sum(r == h for r, h in zip(refs, hyps))
    print(f"transcribe WER {100.0 * errors / words:.1f}% ({errors}/{words}), {exact}/{len(refs)} utterances exact")
    # the learning run ends at 1-4 % WER, 38-39/40 utterances exact, on the same held-out utterances
    assert errors / words < 0.15, list(zip(refs, hyps))
    assert exact >= 0.75 * len(refs), list(zip(refs, hyps))

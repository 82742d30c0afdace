"""bench/gpu/remote.py's summary of issue #6's decode targets, from a GPU run's results."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_target_lines_judge_each_sane_row_against_its_preset_target(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench" / "gpu"))
    sys.modules.pop("remote", None)
    import remote

    def row(ok, *pairs):
        return {"sanity": {"ok": ok}, "lengths": {str(c): {"hbm_frac": f, "decode_tok_s": t} for c, f, t in pairs}}

    bench = {"qwen3-4b": {"ours": row(True, (128, 0.59, 350), (2048, 0.58, 333)),
                          "ours_pdl": row(True, (128, 0.81, 480), (2048, 0.80, 460)),
                          "ours_pdl_launch": row(False, (128, 0.9, 500), (2048, 0.9, 500)),  # failed its sanity check
                          "hf_compiled": {"lengths": {"128": {"decode_tok_s": 136}, "2048": {"decode_tok_s": 109}}}},
             "qwen3-0.6b": {"ours": row(True, (128, 0.28, 1130), (2048, 0.30, 990))},
             "dry-small": {"ours": row(True, (128, 0.1, 5), (2048, 0.1, 5))}}  # no target
    text = "\n".join(remote.target_lines(bench, [128, 2048]))
    assert "qwen3-4b ours: 59% / 58% at C = 128 / 2048; target 80% of HBM: not met; " \
           "vs transformers compiled 2.6x / 3.1x (ahead)" in text
    assert "qwen3-4b ours pdl: 81% / 80%" in text and "80% of HBM: MET" in text
    assert "pdl launch" not in text and "dry-small" not in text
    assert "qwen3-0.6b ours: 1,130 tok/s / 990 tok/s at C = 128 / 2048; target 1,000 tok/s: not met; " \
           "vs transformers compiled -" in text
    assert remote.target_lines({"dry-small": bench["dry-small"]}, [128, 2048]) == []

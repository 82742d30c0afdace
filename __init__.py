"""inference-pio: a compiled, graph-based LLM inference engine built on Apache TVM.

    from inference_pio import engine, frontends
    md = frontends.huggingface.model_def("path/to/hf_checkpoint")
    art = engine.compile(md, target="llvm")
    rt = engine.load(art.save("out/"), weights="path/to/hf_checkpoint", device="cpu")
"""
__version__ = "0.1.0"
